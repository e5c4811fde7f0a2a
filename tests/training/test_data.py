from __future__ import annotations

import numpy as np
import pytest
import torch

from minority.data import (
    CLASS_NAMES,
    class_prompts,
    find_fashion_mnist,
    load_fashion_mnist,
    make_captions,
    read_idx,
    to_model_input,
    write_idx,
)
from minority.data.captions import SYNONYMS, all_captions
from minority.errors import MinorityError


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_idx_roundtrip(tmp_path, name):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / name, arr)), arr)


def test_read_idx_rejects_garbage(tmp_path):
    (tmp_path / "x").write_bytes(b"hello world")
    with pytest.raises(MinorityError, match="not an idx file"):
        read_idx(tmp_path / "x")


def test_load_shapes_and_dtypes(fake_data_dir):
    data = load_fashion_mnist(fake_data_dir)
    assert data.train_images.shape == (64, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.train_labels.shape == (64,) and data.train_labels.dtype == torch.int64
    assert data.test_images.shape == (20, 28, 28)
    assert set(data.test_labels.tolist()) == set(range(10))
    images, labels = data.split("test")
    assert images is data.test_images and labels is data.test_labels


def test_uncompressed_folder(tmp_path, make_fake_data):
    data = load_fashion_mnist(make_fake_data(tmp_path, n_train=10, n_test=10, gz=False))
    assert len(data.train_images) == 10


def test_missing_dataset_message(tmp_path):
    with pytest.raises(MinorityError, match="dataset-fashion-mnist.*--data-dir"):
        find_fashion_mnist(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(MinorityError, match="train-labels-idx1-ubyte"):
        find_fashion_mnist(tmp_path / "half")


def test_to_model_input_pads_with_background():
    img = torch.full((2, 28, 28), 255, dtype=torch.uint8)
    x = to_model_input(img)
    assert x.shape == (2, 1, 32, 32) and x.dtype == torch.float32
    assert x[:, :, 2:30, 2:30].eq(1).all() and x[:, :, :2].eq(-1).all() and x[:, :, :, 30:].eq(-1).all()


def test_captions_deterministic_per_seed():
    labels = list(range(10)) * 20
    a, b, c = make_captions(labels, seed=3), make_captions(labels, seed=3), make_captions(labels, seed=4)
    assert a == b and a != c
    assert len(a) == 200


def test_captions_mention_their_class_and_empty_share():
    labels = [7] * 2000
    caps = make_captions(labels, seed=0, empty_fraction=0.1)
    empty = sum(c == "" for c in caps) / len(caps)
    assert 0.07 < empty < 0.13
    nouns = [n for n, _ in SYNONYMS[7]]
    assert all(any(n in c for n in nouns) for c in caps if c)
    assert make_captions(labels[:50], seed=0, empty_fraction=0.0).count("") == 0
    with pytest.raises(MinorityError):
        make_captions([11], seed=0)


def test_caption_examples_and_prompts():
    caps = set(all_captions(7))
    assert {"a photo of a sneaker", "a sneaker", "sneaker on a dark background"} <= caps
    assert class_prompts()[7] == "a photo of a sneaker" and len(class_prompts()) == len(CLASS_NAMES) == 10
    assert "a photo of a pair of trousers" in all_captions(1)
