"""Input checks shared by the metric functions: feature matrices as float64 tensors.

Every metric accepts ``numpy`` arrays or ``torch`` tensors of shape ``(N, D)`` and computes in float64 on
the tensor's device. Problems with the inputs (wrong rank, too few samples for ``k``, different feature
dimensions) raise :class:`~minority.errors.MinorityError` with one actionable line.
"""

from __future__ import annotations

import numpy as np
import torch

from minority.errors import MinorityError


def as_features(x, name: str = "features") -> torch.Tensor:
    """Return ``x`` as a float64 tensor ``(N, D)`` (a 1-D input is not accepted: pass ``(N, 1)``).

    Raises:
        MinorityError: when ``x`` is not 2-D, is empty or holds NaN/inf values.
    """
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    t = t.detach().to(torch.float64)
    if t.ndim != 2:
        raise MinorityError(f"{name} must be a 2-D (N, D) array, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise MinorityError(f"{name} is empty (shape {tuple(t.shape)}): no images were featurised")
    if not torch.isfinite(t).all():
        raise MinorityError(f"{name} contains NaN or inf values: check the images and the feature extractor")
    return t


def as_pair(real, fake, real_name: str = "reference features", fake_name: str = "generated features"):
    """Both feature sets as float64 ``(N, D)`` tensors on ``real``'s device, with equal ``D``."""
    r = as_features(real, real_name)
    f = as_features(fake, fake_name).to(r.device)
    if r.shape[1] != f.shape[1]:
        raise MinorityError(
            f"feature dimension mismatch: {real_name} have D={r.shape[1]}, {fake_name} D={f.shape[1]}; "
            "compute both with the same extractor (--features)"
        )
    return r, f


def check_k(n: int, k: int, what: str, metric: str, setting: str, within: bool = True) -> None:
    """Raise unless ``n`` samples give each query ``k`` neighbours.

    Within one set (``within=True``, the sample itself excluded) that needs ``n >= k + 1``; neighbours
    searched in another set need ``n >= k``.
    """
    if int(k) < 1:
        raise MinorityError(f"{metric}: k must be >= 1, got {k} (setting {setting})")
    needed = k + 1 if within else k
    if n < needed:
        raise MinorityError(
            f"{metric} with k={k} needs at least {needed} {what}, got {n}: add {what} or lower {setting}"
        )
