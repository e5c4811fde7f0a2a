"""Confidence intervals of per-image metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minority.metrics import summarize


def test_normal_interval_and_nan_handling():
    v = np.array([1.0, 2.0, 4.0, np.nan, 7.0])
    s = summarize(v)
    x = v[np.isfinite(v)]
    half = 1.959963984540054 * x.std(ddof=1) / math.sqrt(4)
    assert s.n == 4 and s.mean == pytest.approx(x.mean())
    assert s.ci95 == pytest.approx((x.mean() - half, x.mean() + half))
    assert summarize([3.0]).ci95 is None


def test_wilson_interval_for_indicators():
    s = summarize([1.0] * 19 + [0.0])
    lo, hi = s.ci95
    z = 1.959963984540054
    p, n = 0.95, 20
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == pytest.approx((centre - half, centre + half)) and hi <= 1.0
