"""The feature-extractor interface (see :mod:`minority.metrics.features` for the contract and the registry in
:mod:`minority.metrics.extractors`)."""

from __future__ import annotations

import torch
from torch import nn

from minority.metrics.cache import state_digest


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
