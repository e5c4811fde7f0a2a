"""Registry of the models shipped inside the package (``minority/assets/models/<name>/``).

``embedded_models()`` lists them for ``minority models``; ``resolve_embedded(name)`` turns a name
such as ``fashion-sd`` into its folder for ``--model fashion-sd``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ASSETS_DIR = Path(__file__).resolve().parent / "assets" / "models"
MODEL_NAMES: tuple[str, ...] = ("fashion-sd", "fashion-flow", "fashion-ddpm", "fashion-classifier")
Kind = Literal["sd", "flow", "ddpm", "classifier"]


@dataclass(frozen=True)
class EmbeddedModel:
    """One shipped model folder."""

    name: str
    path: Path
    kind: Kind
    size_bytes: int
    provenance: dict[str, Any] = field(default_factory=dict)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def model_kind(folder: str | Path) -> Kind | None:
    """``'sd'`` (StableDiffusionPipeline folder), ``'flow'`` (StableDiffusion3Pipeline folder), ``'ddpm'`` (DDPMPipeline / UNet2DModel folder),
    ``'classifier'`` (FashionClassifier folder) or None when ``folder`` is none of these."""
    folder = Path(folder)
    index = _read_json(folder / "model_index.json").get("_class_name", "")
    if index == "StableDiffusionPipeline":
        return "sd"
    if index == "StableDiffusion3Pipeline":
        return "flow"
    if index == "DDPMPipeline" or _read_json(folder / "config.json").get("_class_name") == "UNet2DModel":
        return "ddpm"
    if _read_json(folder / "config.json").get("_class_name") == "FashionClassifier":
        return "classifier"
    return None


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def embedded_models(root: str | Path | None = None) -> list[EmbeddedModel]:
    """The complete model folders under ``root`` (default: the package's ``assets/models``), sorted by name."""
    root = Path(root) if root is not None else ASSETS_DIR
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        kind = model_kind(folder)
        if kind is not None:
            out.append(EmbeddedModel(name=folder.name, path=folder, kind=kind, size_bytes=_size(folder),
                                     provenance=_read_json(folder / "provenance.json")))
    return out


def resolve_embedded(name: str, root: str | Path | None = None) -> Path | None:
    """Folder of the embedded model ``name`` (e.g. ``"fashion-sd"``), or None if not shipped."""
    for model in embedded_models(root):
        if model.name == name:
            return model.path
    return None


def declared_defaults(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """The sampling defaults an embedded model folder declares (``minority_defaults`` in ``model_index.json``)."""
    folder = resolve_embedded(name, root)
    return dict(_read_json(folder / "model_index.json").get("minority_defaults", {})) if folder else {}
