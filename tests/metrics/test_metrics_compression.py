"""The likelihood confound control (issue 18): PNG-compressed size per image, its Spearman correlation with NLL,
and the split of a likelihood gain into what image detail predicts and the residual."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy.stats import linregress, spearmanr

from minority.benchmark.confound import detail_control, detail_markdown
from minority.errors import MinorityError
from minority.metrics.compression import png_bits_per_pixel


def test_png_bits_per_pixel_is_the_re_encoded_size():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    flat = np.full((64, 64, 3), 128, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG", compress_level=9)
    assert png_bits_per_pixel(noise) == 8 * len(buf.getvalue()) / (64 * 64)
    assert 24 <= png_bits_per_pixel(noise) < 25.5  # incompressible: 3 × 8 bits per pixel plus headers
    assert png_bits_per_pixel(flat) < 0.5
    gray = noise[..., 0]
    assert png_bits_per_pixel(gray[..., None]) == png_bits_per_pixel(gray) and 8 <= png_bits_per_pixel(gray) < 9
    with pytest.raises(MinorityError, match="uint8"):
        png_bits_per_pixel(noise.astype(np.float32))


def _arm(rng, n, bpp_mean, shift, slope=2.0):
    bpp = rng.normal(bpp_mean, 0.3, n)
    return slope * bpp + shift + rng.normal(0, 0.05, n), bpp


def test_detail_control_splits_a_gain_into_detail_and_residual():
    rng = np.random.default_rng(1)
    data = {"ddim": _arm(rng, 400, 3.0, 0.0), "detail": _arm(rng, 400, 3.5, 0.0), "rarer": _arm(rng, 400, 3.0, 0.3),
            "same": _arm(rng, 400, 3.0, 0.0)}
    rows = {r.arm: r for r in detail_control(data, "ddim")}
    assert rows["ddim"].verdict == "base" and rows["ddim"].gain is None
    assert rows["detail"].verdict == "explained by detail alone"
    assert rows["rarer"].verdict == "not explained by detail alone"
    assert rows["same"].verdict == "no significant gain"
    # the common slope is least squares on the per-arm centred values (scipy as the reference), near the true 2
    nll = np.concatenate([d[0] - d[0].mean() for d in data.values()])
    bpp = np.concatenate([d[1] - d[1].mean() for d in data.values()])
    fit = linregress(bpp, nll)
    assert rows["ddim"].slope == pytest.approx(fit.slope) and abs(fit.slope - 2) < 0.05
    d = rows["detail"]
    assert d.predicted_by_detail == pytest.approx(fit.slope * (data["detail"][1].mean() - data["ddim"][1].mean()))
    assert d.gain == pytest.approx(data["detail"][0].mean() - data["ddim"][0].mean())
    assert d.gain == pytest.approx(d.predicted_by_detail + d.residual_gain)
    assert d.spearman == pytest.approx(spearmanr(data["detail"][1], data["detail"][0])[0])
    md = "\n".join(detail_markdown(list(rows.values()), "ddim"))
    assert "## Likelihood and image detail" in md and "explained by detail alone" in md
    assert detail_control(data, "missing") == []
