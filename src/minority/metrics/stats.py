"""Summary statistics of per-image metric values: mean with a 95% confidence interval.

The interval is the normal approximation ``mean ± 1.96·std/√n`` (``std`` with ``ddof=1``), or the Wilson
score interval when every value is 0 or 1 (per-image indicators such as precision's "inside the real
manifold" or alignment's "predicted class = prompt class"), which stays inside [0, 1].
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


class Summary(NamedTuple):
    """Mean, sample standard deviation, count and 95% CI (``None`` for n < 2)."""

    mean: float
    std: float
    n: int
    ci95: tuple[float, float] | None


def summarize(values) -> Summary:
    """Summary of a 1-D array of per-image values (NaN entries are ignored)."""
    v = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return Summary(float("nan"), float("nan"), 0, None)
    mean = float(v.mean())
    if n < 2:
        return Summary(mean, float("nan"), n, None)
    std = float(v.std(ddof=1))
    if np.isin(v, (0.0, 1.0)).all():
        return Summary(mean, std, n, wilson_interval(mean, n))
    half = Z95 * std / math.sqrt(n)
    return Summary(mean, std, n, (mean - half, mean + half))


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` trials."""
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if p <= 0 else max(0.0, centre - half)  # exact bounds at 0 and 1 (no rounding residue)
    hi = 1.0 if p >= 1 else min(1.0, centre + half)
    return (lo, hi)
