"""Classifier-backed extractors: any module with ``features(x)`` and ``forward(x) -> logits``.

The project's Fashion-MNIST classifier (``minority.nets.fashion_classifier``) takes images in [-1, 1],
``(B, 1, 32, 32)`` or ``(B, 3, H, W)``, returns logits from ``forward`` and penultimate features from
``features``. :class:`ClassifierExtractor` adapts such a module: images are resized (clean-fid bicubic) to
``input_size`` and scaled to [-1, 1] as 3-channel RGB; the module converts to gray itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from minority.data.captions import CLASS_NAMES, SYNONYMS
from minority.errors import MinorityError
from minority.metrics.extractors.base import FeatureExtractor
from minority.nets.fashion_classifier import load_classifier


class ClassifierExtractor(FeatureExtractor):
    """Wrap ``module`` (with ``features(x)`` and logits from ``module(x)``) as a feature extractor.

    Args:
        module: the classifier, inputs ``(B, 3, H, W)`` in [-1, 1].
        name: registry name recorded in ``metrics.json``.
        input_size: ``(H, W)`` the images are resized to (default: ``module.config.image_size`` or 32).
        class_names: names of the logits' classes; class_synonyms: per class, words naming it in prompts.
    """

    preprocessing = "clean-fid bicubic resize, x/127.5-1, RGB"

    def __init__(
        self,
        module: nn.Module,
        name: str = "classifier",
        input_size: tuple[int, int] | None = None,
        class_names: Sequence[str] | None = None,
        class_synonyms: Sequence[Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        if not callable(getattr(module, "features", None)):
            raise MinorityError(f"{type(module).__name__} has no features(x) method: it cannot be used as an extractor")
        self.module = module
        self.name = name
        if input_size is None:
            s = int(getattr(getattr(module, "config", None), "image_size", 32))
            input_size = (s, s)
        self.input_size = tuple(int(v) for v in input_size)
        self.class_names = tuple(class_names) if class_names is not None else None
        self.class_synonyms = tuple(tuple(s) for s in class_synonyms) if class_synonyms is not None else None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images / 127.5 - 1.0
        return {"features": self.module.features(x), "logits": self.module(x)}


def load_fashion_classifier(weights: str | Path | None = None, device: str | torch.device = "cpu") -> ClassifierExtractor:
    """Registry loader of ``fashion-classifier``: the embedded classifier, or the folder ``weights``."""
    model = load_classifier(weights, device=device)
    synonyms = [[noun for noun, _ in group] for group in SYNONYMS]
    return ClassifierExtractor(model, name="fashion-classifier", class_names=CLASS_NAMES, class_synonyms=synonyms)
