"""A resumable training run: its folder (``config.json``, ``train.log``, ``loss.png``, ``checkpoint/``) and the
state to resume bit-for-bit (module and EMA weights, optimiser state, the noise generator, step counters, loss
history)."""

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

from minority.data import load_fashion_mnist, to_model_input
from minority.errors import MinorityError
from minority.training.common import EMA, select_device


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


def start_training(config, run_dir: str | Path, *, data_dir: str | Path | None, device: str, resume: bool,
                   checkpoint_minutes: float, max_minutes: float | None, log_every: int, export_only: bool):
    """Shared prologue of the diffusion trainings: device, seed, Fashion-MNIST train split as model input
    ``(N, 1, 32, 32)`` in [-1, 1] with labels ``(N,)`` (cut to ``config.train_limit``), and the resumable run.

    Returns ``(device, data, x_train, y_train, run)``.
    """

    dev = select_device(device)
    torch.manual_seed(config.seed)
    data = load_fashion_mnist(data_dir)
    x_train, y_train = to_model_input(data.train_images), data.train_labels
    if config.train_limit:
        x_train, y_train = x_train[: config.train_limit], y_train[: config.train_limit]
    run = Run(run_dir, config, resume=resume, checkpoint_minutes=checkpoint_minutes, max_minutes=max_minutes,
              log_every=log_every, export_only=export_only)
    return dev, data, x_train, y_train, run
