"""``minority quality``: alignment, Fréchet distances and the per-class grid on tiny models and fake data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from minority.cli.main import main
from minority.metrics.features import FeatureExtractor, register_extractor
from minority.training.quality import format_quality, measure_quality


class PixelMeans(FeatureExtractor):
    name = "quality-test-pixels"
    input_size = (8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, images):
        return {"features": (images / 255.0 * self.scale).flatten(1)[:, :24]}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    register_extractor("quality-test-pixels", lambda weights=None, device="cpu": PixelMeans())
    monkeypatch.setenv("MINORITY_CACHE_DIR", str(tmp_path / "cache"))


def test_quality_on_tiny_sd(tmp_path, fake_data_dir):
    r = measure_quality("tiny-random-sd", tmp_path / "q", seeds=2, steps=2, guidance=1.0, data_dir=fake_data_dir,
                        features="quality-test-pixels", train_images=(20, 64))
    assert r["samples"] == 20 and r["method"] == "ddim" and r["steps"] == 2
    assert 0.0 <= r["class_accuracy"] <= 1.0
    assert r["bar"] == 0.95 and r["passes_bar"] == (r["class_accuracy"] >= 0.95)
    per_class = list(r["per_class_accuracy"].values())
    assert len(per_class) == 10 and np.isclose(np.mean(per_class), r["class_accuracy"])  # 2 samples per class
    assert set(r["fd_real_train_vs_reference"]) == {"20", "64"}
    assert all(v >= 0 for v in r["fd_real_train_vs_reference"].values()) and r["fd_samples_vs_reference"] > 0
    saved = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert saved["fd_samples_vs_reference"] == pytest.approx(r["fd_samples_vs_reference"])
    grid = Image.open(tmp_path / "q" / "samples.png")
    assert grid.height > 10 * 64  # one row per class
    md = (tmp_path / "q" / "quality.md").read_text()
    assert md == format_quality(r) and "class accuracy" in md and "sneaker" in md


def test_quality_cli_rejects_too_few_seeds(tmp_path, capsys):
    assert main(["quality", "tiny-random-sd", "--seeds", "1", "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seeds" in err[0]


def test_quality_cli_rejects_bad_real_sizes(tmp_path, capsys):
    assert main(["quality", "tiny-random-sd", "--real-sizes", "10,x", "--out", str(tmp_path / "q")]) == 2
    assert "--real-sizes" in capsys.readouterr().err
