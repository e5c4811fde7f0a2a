"""The embedded Fashion-MNIST classifier (alignment score and domain feature space).

Input ``(B, 1, 32, 32)`` in ``[-1, 1]`` (28×28 Fashion-MNIST padded with background); ``(B, 3, H, W)``
RGB or other sizes are converted to gray and resized to 32×32. ``forward(x) -> logits (B, 10)``,
``features(x) -> (B, feature_dim)`` penultimate (post-ReLU) features. Weights: ``model.safetensors``
with ``config.json`` in one folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from minority.embedded import resolve_embedded
from minority.errors import MinorityError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of :class:`FashionClassifier` (written as ``config.json``)."""
    channels: tuple[int, ...] = (16, 32, 64)
    feature_dim: int = 256
    num_classes: int = 10
    image_size: int = 32
    dropout: float = 0.3


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class FashionClassifier(nn.Module):
    """Small VGG-style CNN: conv blocks (each halving the size) -> linear features -> linear logits."""
    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config or ClassifierConfig()
        c = self.config
        chans = (1, *c.channels)
        self.body = nn.Sequential(*[_block(a, b) for a, b in zip(chans[:-1], chans[1:])])
        side = c.image_size // 2 ** len(c.channels)
        self.fc = nn.Linear(c.channels[-1] * side * side, c.feature_dim)
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.feature_dim, c.num_classes)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1|3, H, W)`` in [-1, 1] -> ``(B, 1, S, S)`` gray at the model's ``image_size`` S."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise MinorityError(f"classifier input must be (B, 1, H, W) or (B, 3, H, W), got {tuple(x.shape)}")
        x = x.float()
        if x.shape[1] == 3:
            w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
            x = (x * w[None, :, None, None]).sum(1, keepdim=True)
        s = self.config.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, feature_dim)`` of images ``(B, C, H, W)`` in [-1, 1]."""
        h = self.body(self.prepare(x))
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)`` of images ``(B, C, H, W)`` in [-1, 1]."""
        return self.head(self.dropout(self.features(x)))


def save_classifier(model: FashionClassifier, folder: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (weights cast to ``dtype``) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"_class_name": "FashionClassifier", **asdict(model.config)}
    (folder / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
    sd = {k: (v.to(dtype) if v.dtype.is_floating_point else v).detach().cpu().contiguous()
          for k, v in model.state_dict().items()}
    save_file(sd, str(folder / WEIGHTS_NAME))
    return folder


def load_classifier(folder: str | Path | None = None, device: torch.device | str = "cpu") -> FashionClassifier:
    """Load a classifier folder (default: the embedded ``fashion-classifier``) in eval mode, float32."""
    if folder is None:
        folder = resolve_embedded("fashion-classifier")
        if folder is None:
            raise MinorityError("the embedded fashion-classifier is missing: run `minority train fashion-classifier`")
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise MinorityError(f"{folder} is not a classifier folder (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    raw = json.loads((folder / CONFIG_NAME).read_text())
    raw.pop("_class_name", None)
    raw["channels"] = tuple(raw["channels"])
    model = FashionClassifier(ClassifierConfig(**raw))
    sd = {k: v.float() if v.dtype.is_floating_point else v for k, v in load_file(str(folder / WEIGHTS_NAME)).items()}
    model.load_state_dict(sd)
    return model.to(device).eval()
