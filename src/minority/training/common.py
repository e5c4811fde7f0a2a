"""Shared training machinery: devices, seeding, data batches, EMA, LR schedule, resumable runs.

Data order is a pure function of ``(seed, step)``. The resumable run itself (:class:`Run`,
:func:`start_training`) is in :mod:`minority.training.checkpoint`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch
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


def update_model_index(folder: str | Path, **entries) -> None:
    """Add ``entries`` (e.g. ``minority_defaults={"guidance": 3.0}``, ``null_class_label=10``) to the exported
    folder's ``model_index.json``: how :func:`minority.pipelines.loading.load_components` learns a model's own defaults."""

    path = Path(folder) / "model_index.json"
    index = json.loads(path.read_text())
    index.update(entries)
    path.write_text(json.dumps(index, indent=2) + "\n")
