"""ImageReward (Xu et al. 2023), only where its package and weights can be loaded.

The ``image-reward`` package (module ``ImageReward``) does not install on transformers >= 5 (it pins an
old BLIP stack), so on this project's environment :func:`load_imagereward` raises a clear error. Where it
is installed, ``ImageReward-v1.0`` is loaded from ``weights`` (a local ``.pt`` file / download folder) or
its default download location.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from minority.errors import MinorityError


class ImageRewardScorer:
    """``score(prompts, images)`` -> ``(N,)`` ImageReward values for ``uint8 (H, W, 3)`` images."""

    def __init__(self, model) -> None:
        self.model = model

    def score(self, prompts: Sequence[str], images: Sequence[np.ndarray]) -> torch.Tensor:
        from PIL import Image

        vals = []
        with torch.no_grad():
            for prompt, img in zip(prompts, images, strict=True):
                r = self.model.score(prompt, [Image.fromarray(img)])
                vals.append(float(r[0] if isinstance(r, (list, tuple)) else r))
        return torch.tensor(vals, dtype=torch.float64)


def load_imagereward(weights: str | Path | None = None, device: str | torch.device = "cpu") -> ImageRewardScorer:
    """Load ImageReward-v1.0, or raise a :class:`MinorityError` saying why it cannot be used."""
    try:
        import ImageReward as reward  # noqa: N813
    except Exception as exc:  # noqa: BLE001 -- ImportError, or a crash of its transformers imports
        raise MinorityError(
            "imagereward needs the `image-reward` package and its ImageReward-v1.0 weights, and that package "
            f"does not import with this transformers version ({type(exc).__name__}): install it in an environment "
            "with transformers<4.30, or drop imagereward from --metrics"
        ) from exc
    try:
        kw = {"download_root": str(weights)} if weights is not None and Path(weights).is_dir() else {}
        name = str(weights) if weights is not None and Path(weights).is_file() else "ImageReward-v1.0"
        return ImageRewardScorer(reward.load(name, device=str(device), **kw))
    except Exception as exc:  # noqa: BLE001
        raise MinorityError(
            f"could not load the ImageReward-v1.0 weights ({type(exc).__name__}): download ImageReward.pt and "
            "med_config.json from the hub repo THUDM/ImageReward and pass their folder as imagereward_weights=DIR"
        ) from exc
