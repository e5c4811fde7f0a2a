"""Shared training machinery: devices, seeding, data batches, EMA, LR schedule, resumable runs.

A :class:`Run` owns a run folder (``config.json``, ``train.log``, ``loss.png``, ``checkpoint/``)
and the state needed to resume bit-for-bit: module and EMA weights, optimiser state and the noise
generator (``checkpoint/weights.safetensors``) plus step counters and loss history
(``checkpoint/state.json``). Data order is a pure function of ``(seed, step)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from minority.errors import MinorityError


def select_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise ``torch.device(name)`` (validated)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise MinorityError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MinorityError(f"device {name!r} requested but CUDA is not available: use --device cpu")
    return device


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices ``(batch_size,)`` of training step ``step``: epoch-wise permutations seeded by ``(seed, epoch)``.

    Incomplete last batches are dropped, so the result depends only on ``(n, batch_size, seed, step)``.
    """
    if batch_size > n:
        batch_size = n
    per_epoch = n // batch_size
    epoch, k = divmod(int(step), per_epoch)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)[k * batch_size : (k + 1) * batch_size]


def random_shift_flip(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2, flip: bool = True) -> torch.Tensor:
    """Augment ``(B, C, H, W)`` images in [-1, 1]: random integer shifts (background padding) and h-flips."""
    b, _, h, w = x.shape
    if max_shift > 0:
        padded = torch.nn.functional.pad(x, (max_shift,) * 4, value=-1.0)
        dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
        dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
        x = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    if flip:
        mask = torch.rand(b, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x


def warmup_cosine(step: int, total: int, warmup: int, final_fraction: float = 0.1) -> float:
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine decay to ``final_fraction``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers."""

    def __init__(self, module: nn.Module, decay: float = 0.999, warmup: int = 100) -> None:
        self.decay, self.warmup = decay, warmup
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.updates = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """shadow ← d·shadow + (1−d)·weights, with ``d = min(decay, (1+n)/(warmup+n))``."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (self.warmup + self.updates))
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.detach(), 1 - d)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, module: nn.Module) -> None:
        """Load the averaged weights into ``module``."""
        module.load_state_dict(self.shadow)


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{prefix}.{idx}.{key}"] = val.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(idx), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        if name.startswith(prefix + "."):
            idx, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[key] = val
    for idx, vals in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(vals)
    return {"state": state, "param_groups": meta["param_groups"]}


class Run:
    """A resumable training run in ``run_dir``.

    Register modules, optimisers, EMAs and generators, then call :meth:`loop` for each phase.
    Checkpoints are written every ``checkpoint_minutes`` and at the end of each phase.
    """

    def __init__(self, run_dir: str | Path, config: Any, resume: bool = False, checkpoint_minutes: float = 5.0,
                 max_minutes: float | None = None, log_every: int = 25, export_only: bool = False) -> None:
        self.dir = Path(run_dir)
        self.ckpt_dir = self.dir / "checkpoint"
        self.config = config
        self.checkpoint_minutes = checkpoint_minutes
        self.max_minutes = max_minutes
        self.log_every = log_every
        self.export_only = export_only
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.emas: dict[str, EMA] = {}
        self.generators: dict[str, torch.Generator] = {}
        self.state: dict[str, Any] = {"steps": {}, "history": {}, "wall_s": 0.0, "done": []}
        self.resume = resume
        self._session_start = time.time()
        self._wall_at_start = 0.0
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.dir / "config.json"
        if resume and not (self.ckpt_dir / "state.json").is_file():
            raise MinorityError(f"--resume given but {self.ckpt_dir} holds no checkpoint: start without --resume")
        if not resume and (self.ckpt_dir / "state.json").is_file():
            raise MinorityError(
                f"{self.dir} already holds a checkpoint: pass --resume to continue it or choose another --out"
            )
        cfg_path.write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
        self.log_file = open(self.dir / "train.log", "a", buffering=1)  # noqa: SIM115

    # -- logging -----------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        """Print ``message`` with a timestamp and append it to ``train.log``."""
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        print(line, file=sys.stderr, flush=True)
        self.log_file.write(line + "\n")

    @property
    def wall_s(self) -> float:
        """Training wall time over all sessions (seconds)."""
        return self._wall_at_start + time.time() - self._session_start

    # -- registration --------------------------------------------------------------------------------
    def add_module(self, name: str, module: nn.Module) -> nn.Module:
        self.modules[name] = module
        return module

    def add_optimizer(self, name: str, opt: torch.optim.Optimizer,
                      scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> torch.optim.Optimizer:
        self.optimizers[name] = opt
        if scheduler is not None:
            self.schedulers[name] = scheduler
        return opt

    def add_ema(self, name: str, ema: EMA) -> EMA:
        self.emas[name] = ema
        return ema

    def add_generator(self, name: str, gen: torch.Generator) -> torch.Generator:
        self.generators[name] = gen
        return gen

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self) -> None:
        """Write the checkpoint atomically (``checkpoint.tmp`` renamed over ``checkpoint``)."""
        tmp = self.dir / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        tensors: dict[str, torch.Tensor] = {}
        for name, m in self.modules.items():
            for k, v in m.state_dict().items():
                tensors[f"module.{name}.{k}"] = v.detach().cpu().contiguous().clone()
        for name, e in self.emas.items():
            for k, v in e.shadow.items():
                tensors[f"ema.{name}.{k}"] = v.detach().cpu().contiguous().clone()
        opt_meta = {}
        for name, opt in self.optimizers.items():
            t, meta = _flatten_optimizer(f"optim.{name}", opt)
            tensors.update(t)
            opt_meta[name] = meta
        for name, g in self.generators.items():
            tensors[f"rng.{name}"] = g.get_state().clone()
        tensors["rng.torch_global"] = torch.get_rng_state().clone()
        save_file(tensors, str(tmp / "weights.safetensors"))
        state = dict(self.state)
        state["wall_s"] = self.wall_s
        state["optimizers"] = opt_meta
        state["schedulers"] = {n: s.state_dict() for n, s in self.schedulers.items()}
        state["ema_updates"] = {n: e.updates for n, e in self.emas.items()}
        (tmp / "state.json").write_text(json.dumps(state))
        old = self.dir / "checkpoint.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.ckpt_dir.exists():
            os.replace(self.ckpt_dir, old)
        os.replace(tmp, self.ckpt_dir)
        shutil.rmtree(old, ignore_errors=True)

    def load(self) -> None:
        """Restore everything registered so far from ``checkpoint/`` (missing entries are left as is)."""
        state = json.loads((self.ckpt_dir / "state.json").read_text())
        tensors = load_file(str(self.ckpt_dir / "weights.safetensors"))
        for name, m in self.modules.items():
            prefix = f"module.{name}."
            sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if sd:
                m.load_state_dict(sd)
        for name, e in self.emas.items():
            prefix = f"ema.{name}."
            sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if sd:
                e.shadow = {k: v.to(e.shadow[k].device) for k, v in sd.items()}
                e.updates = state.get("ema_updates", {}).get(name, 0)
        for name, opt in self.optimizers.items():
            meta = state.get("optimizers", {}).get(name)
            if meta is not None:
                opt.load_state_dict(_unflatten_optimizer(f"optim.{name}", tensors, meta))
        for name, sched in self.schedulers.items():
            if name in state.get("schedulers", {}):
                sched.load_state_dict(state["schedulers"][name])
        for name, g in self.generators.items():
            if f"rng.{name}" in tensors:
                g.set_state(tensors[f"rng.{name}"])
        torch.set_rng_state(tensors["rng.torch_global"])
        self._wall_at_start = float(state.get("wall_s", 0.0))
        self._session_start = time.time()
        self.state.update({k: state[k] for k in ("steps", "history", "done") if k in state})

    # -- loop --------------------------------------------------------------------------------------
    def loop(self, phase: str, total_steps: int, step_fn: Callable[[int], dict[str, float]]) -> bool:
        """Run ``step_fn(step)`` for steps ``[done, total_steps)`` of ``phase``; return True when complete.

        With ``export_only`` nothing is trained and True is returned (export the checkpoint as it is).
        ``step_fn`` returns scalar losses (the first one is plotted). Logs every ``log_every`` steps with
        s/step, checkpoints every ``checkpoint_minutes`` and at the end; stops early (returning False)
        after ``max_minutes`` of this session, leaving a checkpoint to ``--resume`` from.
        """
        start = int(self.state["steps"].get(phase, 0))
        hist = self.state["history"].setdefault(phase, [])
        last_ckpt = time.time()
        t0, n0 = time.time(), start
        if start >= total_steps:
            return True
        if self.export_only:
            self.log(f"{phase}: --export-only at step {start}/{total_steps} (not trained further)")
            return True
        self.log(f"{phase}: steps {start} -> {total_steps}")
        for step in range(start, total_steps):
            losses = step_fn(step)
            self.state["steps"][phase] = step + 1
            first = next(iter(losses.values()))
            if not math.isfinite(first):
                self.save()
                raise MinorityError(f"{phase}: loss became {first} at step {step}; lower --lr and --resume")
            hist.append([step, round(first, 6), round(self.wall_s, 2)])
            if (step + 1) % self.log_every == 0 or step + 1 == total_steps:
                sps = (time.time() - t0) / max(1, step + 1 - n0)
                parts = " ".join(f"{k}={v:.4f}" for k, v in losses.items())
                self.log(f"{phase} step {step + 1}/{total_steps} {parts} {sps:.3f}s/step wall={self.wall_s / 60:.1f}min")
            if time.time() - last_ckpt > 60 * self.checkpoint_minutes:
                self.save()
                last_ckpt = time.time()
                self.log(f"checkpoint saved at {phase} step {step + 1}")
            if self.max_minutes is not None and time.time() - self._session_start > 60 * self.max_minutes:
                self.save()
                self.log(f"stopping after --max-minutes {self.max_minutes}: resume with --resume")
                return False
        self.save()
        self.log(f"{phase}: done ({total_steps} steps), checkpoint saved")
        return True

    def seconds_per_step(self, phase: str, last: int = 200) -> float | None:
        """Mean wall seconds per step over the last ``last`` logged steps of ``phase``."""
        hist = self.state["history"].get(phase, [])
        if len(hist) < 2:
            return None
        h = hist[-last:]
        return (h[-1][2] - h[0][2]) / max(1, h[-1][0] - h[0][0])

    def plot_losses(self, path: str | Path | None = None) -> Path:
        """Write the loss curves of all phases (raw and smoothed, log scale) to ``loss.png``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path) if path is not None else self.dir / "loss.png"
        phases = [p for p, h in self.state["history"].items() if h]
        fig, axes = plt.subplots(1, max(1, len(phases)), figsize=(5 * max(1, len(phases)), 3.5), squeeze=False)
        for ax, phase in zip(axes[0], phases):
            hist = self.state["history"][phase]
            steps = [h[0] for h in hist]
            losses = torch.tensor([h[1] for h in hist], dtype=torch.float64)
            ax.plot(steps, losses.numpy(), alpha=0.3, lw=0.8)
            k = max(1, len(hist) // 50)
            if k > 1:
                smooth = torch.nn.functional.avg_pool1d(losses[None, None], k, stride=1).flatten()
                ax.plot(steps[k - 1 :], smooth.numpy(), lw=1.5)
            ax.set_yscale("log")
            ax.set_title(phase)
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def close(self) -> None:
        self.log_file.close()


def config_from_dict(cls: type, raw: dict[str, Any]) -> Any:
    """Rebuild a (nested) frozen dataclass ``cls`` from its ``dataclasses.asdict`` JSON form."""
    import typing

    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        val, typ = raw[f.name], hints[f.name]
        if dataclasses.is_dataclass(typ) and isinstance(val, dict):
            val = config_from_dict(typ, val)
        elif isinstance(val, list):
            val = tuple(val)
        kwargs[f.name] = val
    return cls(**kwargs)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int) -> Path:
    """Save ``images (N, C, H, W)`` in [-1, 1] (C = 1 or 3) as one PNG grid with ``nrow`` images per row."""
    from PIL import Image

    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n, c, h, w = x.shape
    rows = math.ceil(n / nrow)
    canvas = torch.zeros(c, rows * (h + 2), nrow * (w + 2), dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        canvas[:, r * (h + 2) + 1 : r * (h + 2) + 1 + h, k * (w + 2) + 1 : k * (w + 2) + 1 + w] = x[i]
    Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(path)
    return Path(path)


def start_training(config, run_dir: str | Path, *, data_dir: str | Path | None, device: str, resume: bool,
                   checkpoint_minutes: float, max_minutes: float | None, log_every: int, export_only: bool):
    """Shared prologue of the diffusion trainings: device, seed, Fashion-MNIST train split as model input
    ``(N, 1, 32, 32)`` in [-1, 1] with labels ``(N,)`` (cut to ``config.train_limit``), and the resumable run.

    Returns ``(device, data, x_train, y_train, run)``.
    """
    from minority.data import load_fashion_mnist, to_model_input

    dev = select_device(device)
    torch.manual_seed(config.seed)
    data = load_fashion_mnist(data_dir)
    x_train, y_train = to_model_input(data.train_images), data.train_labels
    if config.train_limit:
        x_train, y_train = x_train[: config.train_limit], y_train[: config.train_limit]
    run = Run(run_dir, config, resume=resume, checkpoint_minutes=checkpoint_minutes, max_minutes=max_minutes,
              log_every=log_every, export_only=export_only)
    return dev, data, x_train, y_train, run


def update_model_index(folder: str | Path, **entries) -> None:
    """Add ``entries`` (e.g. ``minority_defaults={"guidance": 3.0}``, ``null_class_label=10``) to the exported
    folder's ``model_index.json``: how :func:`minority.pipelines.loading.load_components` learns a model's own defaults."""
    import json

    path = Path(folder) / "model_index.json"
    index = json.loads(path.read_text())
    index.update(entries)
    path.write_text(json.dumps(index, indent=2) + "\n")
