"""Reference specs, Fashion-MNIST and the AvgkNN minority subset."""

from __future__ import annotations

import numpy as np
import pytest

from minority.errors import MinorityError
from minority.metrics import open_reference, register_dataset, select_minority
from minority.metrics.references import pad_images, parse_reference


def test_parse_reference_specs(tmp_path):
    assert parse_reference("fashion-mnist:train").source == "fashion-mnist:train"
    spec = parse_reference("fashion-mnist:test:minority=0.1:limit=50")
    assert spec.source == "fashion-mnist:test" and spec.minority == 0.1 and spec.options["limit"] == "50"
    assert parse_reference(f"{tmp_path}:minority=0.5").source == str(tmp_path)
    with pytest.raises(MinorityError, match="unknown reference option"):
        parse_reference("fashion-mnist:test:bogus=1")
    with pytest.raises(MinorityError, match="fraction"):
        _ = parse_reference("fashion-mnist:test:minority=2").minority


def test_registered_dataset_with_padding_and_limit():
    imgs = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
    register_dataset("toy", lambda split, data_dir=None: (imgs if split == "train" else imgs[:2], np.arange(5)),
                     {"pad": 6})
    s, spec = open_reference("toy:train:limit=3")
    assert len(s) == 3 and s.load(0).shape == (6, 6, 3) and s.load(0)[0, 0, 0] == 0
    assert pad_images(imgs, 4) is imgs
    with pytest.raises(MinorityError, match="needs a split"):
        open_reference("toy")
    with pytest.raises(MinorityError, match="unknown dataset"):
        open_reference("nosuchset:train")


def test_fashion_mnist_reference():
    pytest.importorskip("minority.data.fashion_mnist")
    try:
        s, _ = open_reference("fashion-mnist:test:limit=20")
    except MinorityError as exc:
        pytest.skip(str(exc))
    img = s.load(0)
    assert len(s) == 20 and img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert (img[:2] == 0).all()  # padded with the black background, like the models' 32×32 inputs
    raw, _ = open_reference("fashion-mnist:test:limit=2:pad=0")
    assert raw.load(0).shape == (28, 28, 3)


def test_select_minority_brute_force():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 5))
    d = np.sqrt(((feats[:, None] - feats[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    scores = np.sort(d, 1)[:, :5].mean(1)
    keep = select_minority(feats, 0.25, k=5)
    assert len(keep) == 10
    np.testing.assert_array_equal(np.sort(keep), np.sort(np.argsort(-scores)[:10]))
    assert scores[keep[0]] == scores.max()
