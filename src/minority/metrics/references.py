"""Reference ("real") image sets: folders, generation outputs and named datasets, plus minority subsets.

Spec syntax: ``SOURCE[:OPTION=VALUE]...`` where SOURCE is

* an image folder, or a ``minority generate`` output folder (its manifest is read);
* a named dataset ``NAME:SPLIT``: built in ``fashion-mnist:train`` and ``fashion-mnist:test`` (idx files
  under ``/usr/share/datasets/fashion-mnist/``, ``$MINORITY_FASHION_MNIST`` or ``data_dir``), or one
  registered with :func:`register_dataset`.

Options: ``minority=F`` keeps the fraction F of reference images with the highest AvgkNN (k =
``minority_k``, default 5, in the evaluation's feature space) — SGMS' reference for minority quality;
``limit=N`` keeps the first N images; ``pad=S`` (datasets) zero-pads gray images centred to S×S —
Fashion-MNIST defaults to ``pad=32``, the 32×32 layout of the project's models (``pad=0`` keeps 28×28).
Examples: ``fashion-mnist:test``, ``fashion-mnist:train:minority=0.1``, ``outputs/real:minority=0.05``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minority.data.fashion_mnist import load_fashion_mnist
from minority.errors import MinorityError
from minority.metrics.images import ImageSet, array_image_set, open_image_folder
from minority.metrics.knn import avgknn_self

DatasetLoader = Callable[..., tuple[np.ndarray, "np.ndarray | None"]]
_DATASETS: dict[str, tuple[DatasetLoader, dict]] = {}


def register_dataset(name: str, loader: DatasetLoader, defaults: dict | None = None) -> None:
    """Register ``loader(split, data_dir=None) -> (uint8 images (N, H, W[, 3]), labels (N,) or None)``.

    ``defaults`` are option defaults for the dataset (e.g. ``{"pad": 32}``).
    """
    _DATASETS[name] = (loader, dict(defaults or {}))


def _fashion_mnist(split: str, data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_fashion_mnist(data_dir).split(split)
    return images.numpy(), labels.numpy()


register_dataset("fashion-mnist", _fashion_mnist, {"pad": 32})


def pad_images(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad ``uint8 (N, H, W[, 3])`` images centred to ``size × size`` (no-op if already that big)."""
    h, w = images.shape[1:3]
    if size <= 0 or (h >= size and w >= size):
        return images
    ph, pw = max(0, size - h), max(0, size - w)
    pads = [(0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)] + [(0, 0)] * (images.ndim - 3)
    return np.pad(images, pads, mode="constant", constant_values=0)


@dataclass
class ReferenceSpec:
    """A parsed reference spec: ``source`` (folder or ``name:split``) and ``options``."""

    source: str
    options: dict[str, str]

    @property
    def minority(self) -> float | None:
        if "minority" not in self.options:
            return None
        try:
            f = float(self.options["minority"])
        except ValueError:
            f = -1.0
        if not 0 < f <= 1:
            raise MinorityError(f"minority={self.options['minority']} must be a fraction in (0, 1], e.g. minority=0.1")
        return f


KNOWN_OPTIONS = ("minority", "limit", "pad")


def parse_reference(spec: str) -> ReferenceSpec:
    """Split ``SOURCE[:key=value]...`` (an existing path is taken whole, even with ``:`` in it)."""
    spec = str(spec)
    if Path(spec).expanduser().exists():
        return ReferenceSpec(spec, {})
    parts = spec.split(":")
    options: dict[str, str] = {}
    while len(parts) > 1 and "=" in parts[-1]:
        key, _, value = parts.pop().partition("=")
        if key not in KNOWN_OPTIONS:
            raise MinorityError(f"unknown reference option {key!r} in {spec!r}: use {', '.join(KNOWN_OPTIONS)}")
        options[key] = value
    return ReferenceSpec(":".join(parts), options)


def open_reference(spec: str | ReferenceSpec, data_dir: str | Path | None = None) -> tuple[ImageSet, ReferenceSpec]:
    """The reference :class:`ImageSet` of ``spec`` (before any minority selection) and the parsed spec."""
    ref = spec if isinstance(spec, ReferenceSpec) else parse_reference(spec)
    _ = ref.minority  # validate early
    name, _, split = ref.source.partition(":")
    if name in _DATASETS and not Path(ref.source).expanduser().exists():
        loader, defaults = _DATASETS[name]
        if not split:
            raise MinorityError(f"dataset {name!r} needs a split, e.g. {name}:train or {name}:test")
        images, labels = loader(split, data_dir=data_dir)
        opts = {**defaults, **ref.options}
        if "pad" in opts:
            images = pad_images(np.asarray(images), _int_option(opts, "pad"))
        iset = array_image_set(ref.source, np.asarray(images), labels)
    else:
        if split and not Path(ref.source).expanduser().exists() and "/" not in ref.source:
            raise MinorityError(
                f"unknown dataset {name!r} in reference {ref.source!r}: use a folder or one of "
                f"{', '.join(f'{n}:SPLIT' for n in sorted(_DATASETS))}"
            )
        iset = open_image_folder(ref.source)
    if "limit" in ref.options:
        n = _int_option(ref.options, "limit")
        if n < 1:
            raise MinorityError(f"limit={n} must be >= 1")
        iset = iset.subset(range(min(n, len(iset))))
    return iset, ref


def _int_option(options: dict, key: str) -> int:
    try:
        return int(options[key])
    except (TypeError, ValueError) as exc:
        raise MinorityError(f"reference option {key}={options[key]} must be an integer") from exc


def top_fraction(scores, fraction: float) -> np.ndarray:
    """Indices of the ``round(fraction · N)`` (at least 1) highest ``scores``, highest first (ties by index)."""
    scores = np.asarray(scores, dtype=np.float64)
    n_keep = max(1, int(math.floor(fraction * len(scores) + 0.5)))
    return np.lexsort((np.arange(len(scores)), -scores))[:n_keep]


def select_minority(features, fraction: float, k: int = 5) -> np.ndarray:
    """Indices of the ``round(fraction · N)`` (at least 1) rows of ``features (N, D)`` with the highest AvgkNN
    (k nearest other rows), sorted by decreasing AvgkNN."""
    return top_fraction(avgknn_self(features, k).cpu().numpy(), fraction)
