"""Fixtures: a synthetic Fashion-MNIST folder written with the project's idx writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from minority.data import write_idx


def make_fake_fashion_mnist(folder: Path, n_train: int = 64, n_test: int = 20, gz: bool = True) -> Path:
    """Write the 4 idx files: class k is a bright square whose position depends on k, plus noise."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            r, c = 2 + 2 * int(k), 4 + int(k)
            images[i, r : r + 8, c : c + 8] = 220
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels)
    return folder


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory) -> Path:
    return make_fake_fashion_mnist(tmp_path_factory.mktemp("fashion-mnist"))


@pytest.fixture
def make_fake_data():
    """The :func:`make_fake_fashion_mnist` factory, for tests that need their own folder."""
    return make_fake_fashion_mnist
