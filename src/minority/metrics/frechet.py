"""Fréchet distance (FID/cFID/sFID maths) and the Kernel Inception Distance, in float64.

* ``FD = |mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^{1/2})`` with ``S`` the unbiased
  (``N - 1``) covariance, as clean-fid / pytorch-fid. The trace of the matrix square root is computed
  from the eigenvalues of the symmetric PSD matrix ``S_r^{1/2} S_f S_r^{1/2}`` (same value as
  ``scipy.linalg.sqrtm(S_r @ S_f)`` but without its complex round-off).
* KID: unbiased MMD² with the cubic polynomial kernel ``k(x, y) = (x·y / D + 1)^3``, averaged over
  ``subsets`` random subsets of ``subset_size`` samples (clean-fid: 100 × 1000), as clean-fid's
  ``kernel_distance``.

What makes the number "clean" (cFID) is the image pipeline, not this maths: images are quantised to
uint8 and resized with PIL bicubic per channel in float (see :mod:`minority.metrics.images`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from minority.errors import MinorityError
from minority.metrics.arrays import as_features, as_pair


class FeatureStats(NamedTuple):
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of a feature set (float64), and its size."""

    mu: torch.Tensor
    sigma: torch.Tensor
    n: int


def feature_stats(x) -> FeatureStats:
    """Mean and covariance (``np.cov(x, rowvar=False)`` convention) of ``x (N, D)``, N >= 2."""
    x = as_features(x)
    if x.shape[0] < 2:
        raise MinorityError(f"Fréchet distance needs at least 2 images per set, got {x.shape[0]}")
    mu = x.mean(0)
    xc = x - mu
    sigma = xc.T @ xc / (x.shape[0] - 1)
    return FeatureStats(mu, sigma, int(x.shape[0]))


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((a + a.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> float:
    """``tr((sigma1 sigma2)^{1/2})`` for symmetric PSD ``(D, D)`` matrices (float64)."""
    s1 = _sqrtm_psd(sigma1.to(torch.float64))
    m = s1 @ sigma2.to(torch.float64) @ s1
    return float(torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum())


def _f64(x) -> torch.Tensor:
    return (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))).detach().to(torch.float64)


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (float64)."""
    mu1, sigma1 = _f64(mu1), _f64(sigma1)
    mu2, sigma2 = _f64(mu2).to(mu1.device), _f64(sigma2).to(mu1.device)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise MinorityError(
            f"feature dimension mismatch in Fréchet distance: mu {tuple(mu1.shape)} vs {tuple(mu2.shape)}, "
            f"sigma {tuple(sigma1.shape)} vs {tuple(sigma2.shape)}; use the same extractor for both sets"
        )
    diff = mu1 - mu2
    fd = float(diff @ diff) + float(torch.trace(sigma1)) + float(torch.trace(sigma2))
    # a distance is >= 0: round-off in the trace terms can leave identical sets at -1e-5 (clamp it to 0)
    return max(0.0, fd - 2.0 * trace_sqrt_product(sigma1, sigma2))


def frechet_distance(real, fake) -> float:
    """Fréchet distance between feature sets ``real (Nr, D)`` and ``fake (Nf, D)``."""
    r, f = as_pair(real, fake)
    a, b = feature_stats(r), feature_stats(f)
    return frechet_distance_from_stats(a.mu, a.sigma, b.mu, b.sigma)


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> torch.Tensor:
    """``(gamma x·y + coef0)^degree`` for rows of ``x (N, D)`` and ``y (M, D)``; ``gamma`` defaults to 1/D."""
    g = 1.0 / x.shape[1] if gamma is None else float(gamma)
    return (g * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(x, y, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> float:
    """Unbiased MMD² between samples ``x (m, D)`` and ``y (n, D)`` with the polynomial kernel (m, n >= 2).

    ``sum_{i!=j} k(x_i,x_j)/(m(m-1)) + sum_{i!=j} k(y_i,y_j)/(n(n-1)) - 2 sum_{i,j} k(x_i,y_j)/(mn)``.
    """
    x, y = as_pair(x, y, "first sample", "second sample")
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise MinorityError(f"KID needs at least 2 images per set, got {m} and {n}")
    kxx = polynomial_kernel(x, x, degree, gamma, coef0)
    kyy = polynomial_kernel(y, y, degree, gamma, coef0)
    kxy = polynomial_kernel(x, y, degree, gamma, coef0)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.sum() / (m * n))


class KID(NamedTuple):
    """KID estimate: mean and standard deviation of the unbiased MMD² over subsets."""

    mean: float
    std: float
    subset_size: int
    subsets: int


def kid(real, fake, subsets: int = 100, subset_size: int = 1000, degree: int = 3, gamma: float | None = None,
        coef0: float = 1.0, seed: int = 0) -> KID:
    """Kernel Inception Distance of ``fake`` vs ``real`` (clean-fid's ``kernel_distance`` convention).

    Each subset draws ``m = min(Nr, Nf, subset_size)`` samples of each set without replacement
    (``numpy.random.default_rng(seed)``) and computes :func:`mmd2_unbiased`.
    """
    r, f = as_pair(real, fake)
    m = min(r.shape[0], f.shape[0], int(subset_size))
    if m < 2:
        raise MinorityError(f"KID needs at least 2 images per set, got {r.shape[0]} reference and {f.shape[0]} generated")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(int(subsets)):
        fi = torch.as_tensor(rng.choice(f.shape[0], m, replace=False), device=f.device)
        ri = torch.as_tensor(rng.choice(r.shape[0], m, replace=False), device=r.device)
        vals.append(mmd2_unbiased(f[fi], r[ri], degree, gamma, coef0))
    v = np.asarray(vals, dtype=np.float64)
    return KID(float(v.mean()), float(v.std()), m, int(subsets))
