"""Fréchet distance against a scipy `sqrtm` reference; KID against a direct unbiased MMD computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from minority.errors import MinorityError
from minority.metrics import feature_stats, frechet_distance, frechet_distance_from_stats, kid, mmd2_unbiased


def _scipy_fd(x: np.ndarray, y: np.ndarray) -> float:
    """clean-fid / pytorch-fid `frechet_distance` in float64."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("d", [8, 64])
def test_fd_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(400, d))
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    b = rng.normal(size=(300, d)) @ mix + 0.5
    ours = frechet_distance(a, b)
    assert ours == pytest.approx(_scipy_fd(a, b), rel=1e-9)
    st_a, st_b = feature_stats(a), feature_stats(b)
    np.testing.assert_allclose(st_a.sigma.numpy(), np.cov(a, rowvar=False), rtol=1e-10, atol=1e-14)
    assert frechet_distance_from_stats(st_a.mu, st_a.sigma, st_b.mu, st_b.sigma) == pytest.approx(ours, rel=1e-12)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_fd_of_identical_sets_is_zero_not_negative():
    """More dimensions than samples: round-off in tr(S) - tr(sqrt(S S)) used to give about -1e-3 (issue 15)."""
    a = np.random.default_rng(0).normal(size=(300, 512)) * 10
    assert frechet_distance(a, a) == 0.0
    st = feature_stats(a)
    assert frechet_distance_from_stats(st.mu, st.sigma, st.mu, st.sigma) == 0.0


def test_fd_errors():
    with pytest.raises(MinorityError, match="dimension mismatch"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(MinorityError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.ones((5, 3)))


def _direct_mmd(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_kid_matches_direct_unbiased_mmd():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 6))
    y = rng.normal(size=(25, 6)) + 0.4
    assert mmd2_unbiased(x, y) == pytest.approx(_direct_mmd(x, y), rel=1e-10)
    # one subset holding every sample = the full-set estimate (equal sizes: subsets are permutations)
    y2 = rng.normal(size=(30, 6)) + 0.4
    res = kid(x, y2, subsets=1, subset_size=1000)
    assert res.subset_size == 30
    assert res.mean == pytest.approx(_direct_mmd(y2, x), rel=1e-10)
    many = kid(x, y2, subsets=20, subset_size=10, seed=3)
    assert many.subsets == 20 and many.subset_size == 10 and many.std > 0
