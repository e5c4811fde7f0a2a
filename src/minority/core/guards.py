"""Per-sample bookkeeping of an online optimisation that must survive a non-finite objective or gradient.

One image's NaN must not stop, or poison, the others of its batch: a sample whose objective or gradient
becomes non-finite stops optimising (with a warning) and keeps its last finite parameters; the others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

log = logging.getLogger("minority")


class ActiveSamples:
    """Which samples of a batch still optimise.

    Args:
        batch: B.
        seeds: per-sample seeds (for the warning; None entries print the batch index).
    """

    def __init__(self, batch: int, seeds: Sequence[int | None] | None = None):
        self.stopped = [False] * batch
        self.seeds = list(seeds) if seeds else [None] * batch

    def mask(self, device: torch.device | str) -> torch.Tensor:
        """``(B,)`` bool: True for the samples that still optimise."""
        return torch.tensor([not x for x in self.stopped], device=device)

    def observe(self, J: torch.Tensor, params: Sequence[torch.Tensor], step: int, iteration: int) -> None:
        """Stop the samples whose objective ``J (B,)`` or any parameter gradient ``(B, ...)`` is non-finite."""
        finite = torch.isfinite(J.detach())
        for p in params:
            finite &= torch.isfinite(p.grad).flatten(1).all(1)
        for b, ok in enumerate(finite.tolist()):
            if not ok and not self.stopped[b]:
                seed = self.seeds[b] if self.seeds[b] is not None else b
                log.warning("Non-finite objective or gradient for image %d (seed %s) at step %d, iteration %d: "
                            "its token optimisation stops; the last finite token is kept.", b, seed, step, iteration)
                self.stopped[b] = True

    def step(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> None:
        """``optimizer.step()`` for the active samples only: stopped samples get zero (finite) gradients and
        their parameters are restored afterwards (Adam would still move them through its running moments)."""
        for p in params:
            keep = self.mask(p.device).view(-1, *[1] * (p.ndim - 1))
            p.grad = torch.nan_to_num(p.grad) * keep.to(p.dtype)
        before = [p.detach().clone() for p in params]
        optimizer.step()
        with torch.no_grad():
            for p, p0 in zip(params, before):
                keep = self.mask(p.device).view(-1, *[1] * (p.ndim - 1))
                p.copy_(torch.where(keep, p, p0))
