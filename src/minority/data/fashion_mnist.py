"""Fashion-MNIST from idx files (Debian package ``dataset-fashion-mnist``, or any folder).

The folder must hold the four standard files, gzip-compressed or not::
    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

Images are returned as ``uint8`` tensors ``(N, 28, 28)`` (0 = black background) and labels as
``int64`` tensors ``(N,)`` in ``0..9``; :func:`to_model_input` turns them into the ``(N, 1, 32, 32)``
``[-1, 1]`` tensors that the embedded models use.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minority.errors import MinorityError

DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_DIR_ENV = "MINORITY_FASHION_MNIST"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MISSING_HINT = (
    "install the Debian package `dataset-fashion-mnist` (files under /usr/share/datasets/fashion-mnist/) "
    "or pass --data-dir pointing to a folder with the 4 idx files (train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)"
)


@dataclass(frozen=True)
class FashionMNIST:
    """Both splits. Images ``uint8 (N, 28, 28)``, labels ``int64 (N,)``."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    root: Path

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images (N, 28, 28) uint8, labels (N,) int64)`` of split ``"train"`` or ``"test"``."""
        if name == "train":
            return self.train_images, self.train_labels
        if name == "test":
            return self.test_images, self.test_labels
        raise MinorityError(f"unknown Fashion-MNIST split {name!r}: use 'train' or 'test'")


def _idx_path(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def find_fashion_mnist(data_dir: str | Path | None = None) -> Path:
    """Return the folder holding the four idx files.

    Looks at ``data_dir`` if given, else ``$MINORITY_FASHION_MNIST``, else the Debian location.
    Raises :class:`MinorityError` with installation advice when files are missing.
    """
    if data_dir is not None:
        root = Path(data_dir).expanduser()
    elif os.environ.get(DATA_DIR_ENV):
        root = Path(os.environ[DATA_DIR_ENV]).expanduser()
    else:
        root = DEFAULT_FASHION_MNIST_DIR
    if not root.is_dir():
        raise MinorityError(f"Fashion-MNIST folder {root} not found: {_MISSING_HINT}")
    missing = [stem for stem in FILES.values() if _idx_path(root, stem) is None]
    if missing:
        raise MinorityError(f"Fashion-MNIST files missing in {root} ({', '.join(missing)}): {_MISSING_HINT}")
    return root


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (optionally ``.gz``) into a numpy array of its declared shape and dtype."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise MinorityError(f"cannot read idx file {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise MinorityError(f"{path} is not an idx file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[data[2]])
    count = int(np.prod(shape)) if shape else 1
    if len(data) - header < count * dtype.itemsize:
        raise MinorityError(f"{path} is truncated: expected shape {shape}")
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write a ``uint8`` array as an idx file (gzip-compressed when ``path`` ends in ``.gz``)."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(payload)
    return path


def load_fashion_mnist(data_dir: str | Path | None = None) -> FashionMNIST:
    """Load both splits of Fashion-MNIST (see :func:`find_fashion_mnist` for the lookup order).

    Returns:
        :class:`FashionMNIST` with ``train_images (60000, 28, 28) uint8``, ``train_labels (60000,)
        int64`` and the ``test`` equivalents (10,000), or whatever sizes the idx files hold.
    """
    root = find_fashion_mnist(data_dir)
    arrays = {key: read_idx(_idx_path(root, stem)) for key, stem in FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise MinorityError(
                f"Fashion-MNIST {split} files in {root} disagree: images {images.shape}, labels {labels.shape}"
            )
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise MinorityError(f"Fashion-MNIST {split} labels in {root} are outside 0..9")
    return FashionMNIST(
        train_images=torch.from_numpy(arrays["train_images"].astype(np.uint8)),
        train_labels=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_images=torch.from_numpy(arrays["test_images"].astype(np.uint8)),
        test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        root=root,
    )


def to_model_input(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """``uint8 (N, H, W)`` (or ``(N, 1, H, W)``) in 0..255 -> ``float32 (N, 1, size, size)`` in ``[-1, 1]``.

    28×28 images are padded symmetrically with background (−1) to ``size`` (32); other sizes are
    resized bilinearly.
    """
    x = images.float()
    if x.ndim == 3:
        x = x[:, None]
    x = x / 127.5 - 1.0
    h, w = x.shape[-2:]
    if h <= size and w <= size and (size - h) % 2 == 0 and (size - w) % 2 == 0:
        ph, pw = (size - h) // 2, (size - w) // 2
        return F.pad(x, (pw, pw, ph, ph), value=-1.0)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
