"""Image sets to evaluate: folders (plain or generation outputs with a manifest) and in-memory arrays.

An :class:`ImageSet` is a list of images with, per image, a key (relative file name or ``dataset:index``),
its manifest row (prompt, prompt_index, seed, ... when the folder is a generation output) and a content
digest used by the feature cache. Pixels are read lazily, one image at a time, as ``uint8 (H, W, 3)``
RGB (grayscale and RGBA files are converted with PIL's ``convert("RGB")``, as clean-fid does).

Resizing follows clean-fid's "clean" convention (:func:`clean_resize`): the uint8 image is resized per
channel in float32 with PIL's bicubic filter straight to the extractor's input size (no crop, aspect not
kept), then clipped to [0, 255] without re-quantisation. Images of mixed sizes are therefore fine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from minority.errors import MinorityError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
MANIFEST_NAME = "manifest.jsonl"


class BadImageError(MinorityError):
    """An image file that is missing, unreadable or corrupt (the message names the file)."""


@dataclass
class ImageSet:
    """Images to featurise, from files (``paths``) or from a ``uint8`` array ``(N, H, W[, 3])``.

    Attributes:
        name: what the set is, for messages (folder path or dataset spec).
        keys: per-image identifier (path relative to ``root``, or ``"<dataset>:<index>"``).
        meta: per-image manifest row (``{}`` when there is no manifest).
        has_manifest: whether ``meta`` comes from a generation ``manifest.jsonl``.
        labels: optional per-image class labels ``(N,)`` (datasets).
    """

    name: str
    keys: list[str]
    meta: list[dict] = field(default_factory=list)
    paths: list[Path] | None = None
    array: np.ndarray | None = None
    labels: np.ndarray | None = None
    has_manifest: bool = False
    root: Path | None = None
    _digests: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.meta:
            self.meta = [{} for _ in self.keys]

    def __len__(self) -> int:
        return len(self.keys)

    def load(self, i: int) -> np.ndarray:
        """Image ``i`` as ``uint8 (H, W, 3)`` RGB; raises :class:`BadImageError` naming the file."""
        if self.array is not None:
            a = self.array[i]
            return np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else np.ascontiguousarray(a[:, :, :3])
        return load_rgb(self.paths[i])

    def digests(self) -> list[str]:
        """Per-image content digests (SHA-1 of the file bytes or of the array row); computed once."""
        if self._digests is None:
            if self.array is not None:
                self._digests = [_array_digest(self.array[i]) for i in range(len(self))]
            else:
                self._digests = [_file_digest(p) for p in self.paths]
        return self._digests

    def subset(self, indices: Sequence[int]) -> ImageSet:
        """A new set with the images at ``indices`` (in that order)."""
        idx = [int(i) for i in indices]
        d = self.digests() if self._digests is not None else None
        return ImageSet(
            name=self.name,
            keys=[self.keys[i] for i in idx],
            meta=[self.meta[i] for i in idx],
            paths=[self.paths[i] for i in idx] if self.paths is not None else None,
            array=self.array[idx] if self.array is not None else None,
            labels=self.labels[idx] if self.labels is not None else None,
            has_manifest=self.has_manifest,
            root=self.root,
            _digests=[d[i] for i in idx] if d is not None else None,
        )

    def prompts(self) -> list[str]:
        """Per-image prompts from the manifest; raises if the set has no manifest."""
        self.require_manifest("prompts")
        return [str(m.get("prompt", "")) for m in self.meta]

    def groups(self) -> list:
        """Per-image prompt group (``prompt_index``, else the prompt text) from the manifest."""
        self.require_manifest("prompt groups")
        return [m.get("prompt_index", m.get("prompt")) for m in self.meta]

    def require_manifest(self, what: str, metric: str | None = None) -> None:
        if not self.has_manifest:
            raise MinorityError(
                f"{metric or 'this metric'} needs {what}, but {self.name} has no {MANIFEST_NAME}: evaluate a "
                "`minority generate` output folder (with its manifest) or drop the metric"
            )


def _file_digest(path: Path) -> str:
    h = hashlib.sha1()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return "unreadable:" + str(path)  # reported when the image is loaded
    return h.hexdigest()


def _array_digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha1(repr((a.shape, a.dtype.str)).encode() + a.tobytes()).hexdigest()


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to ``uint8 (H, W, 3)`` RGB, or raise :class:`BadImageError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise BadImageError(f"image file {path} is missing: regenerate it or pass --skip-bad to leave it out")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImageError(
            f"cannot read image {path} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'corrupt'}): "
            "replace or delete it, or pass --skip-bad to leave it out"
        ) from exc
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise BadImageError(f"image {path} has no pixels: replace or delete it, or pass --skip-bad")
    return arr


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_manifest(path: Path) -> list[dict]:
    """Rows of a ``manifest.jsonl`` (one JSON object per line; blank lines ignored)."""
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MinorityError(f"{path} line {lineno} is not valid JSON ({exc.msg}): fix or regenerate the manifest") from exc
        if not isinstance(row, dict) or "file" not in row:
            raise MinorityError(f"{path} line {lineno} has no 'file' key: not a `minority generate` manifest")
        rows.append(row)
    return rows


def open_image_folder(folder: str | Path) -> ImageSet:
    """An image folder or a generation output folder (``images/`` + ``manifest.jsonl``).

    With a manifest, the images and their order are the manifest's (keys are its ``file`` entries);
    ``DIR/images`` given directly also finds ``DIR/manifest.jsonl``. Without one, every image file directly
    in the folder (or in its ``images/`` sub-folder) is used, sorted by name.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise MinorityError(f"image folder {root} does not exist: pass an existing folder to --images/--reference")
    if not root.is_dir():
        raise MinorityError(f"{root} is not a folder: pass a folder of images (or a generation output folder)")
    manifest = root / MANIFEST_NAME
    if not manifest.is_file() and root.name == "images" and (root.parent / MANIFEST_NAME).is_file():
        root, manifest = root.parent, root.parent / MANIFEST_NAME
    if manifest.is_file():
        rows = read_manifest(manifest)
        if not rows:
            raise MinorityError(f"{manifest} lists no images: regenerate the folder or remove the empty manifest")
        keys = [str(r["file"]) for r in rows]
        return ImageSet(name=str(root), keys=keys, meta=rows, paths=[root / k for k in keys], has_manifest=True, root=root)
    files = _list_images(root)
    if not files and (root / "images").is_dir():
        files = _list_images(root / "images")
    if not files:
        raise MinorityError(
            f"no images in {root} (looked for {', '.join(IMAGE_EXTENSIONS[:5])}, ...): pass a folder that contains images"
        )
    keys = [str(p.relative_to(root)) for p in files]
    return ImageSet(name=str(root), keys=keys, paths=files, root=root)


def array_image_set(name: str, images: np.ndarray, labels: np.ndarray | None = None) -> ImageSet:
    """An in-memory set from ``uint8`` images ``(N, H, W)`` (gray) or ``(N, H, W, 3)`` (RGB)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (3, 4)):
        raise MinorityError(f"{name}: expected uint8 images (N, H, W) or (N, H, W, 3), got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise MinorityError(f"{name} holds no images")
    keys = [f"{name}:{i}" for i in range(len(images))]
    return ImageSet(name=name, keys=keys, array=images, labels=None if labels is None else np.asarray(labels))


def clean_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """clean-fid resize: ``uint8 (H, W, 3)`` -> ``float32 (3, h, w)`` in [0, 255] at ``size = (h, w)``.

    Each channel is converted to a 32-bit float PIL image, resized with ``Image.BICUBIC`` and clipped to
    [0, 255]; no re-quantisation (clean-fid ``make_resizer("PIL", quantize_after=False, "bicubic")``).
    """
    h, w = int(size[0]), int(size[1])
    if image.shape[0] == h and image.shape[1] == w:
        return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    chans = []
    for c in range(3):
        ch = Image.fromarray(np.ascontiguousarray(image[:, :, c], dtype=np.float32))
        chans.append(np.asarray(ch.resize((w, h), resample=Image.BICUBIC), dtype=np.float32).clip(0, 255))
    return np.stack(chans, 0)


def quantize(images: torch.Tensor) -> np.ndarray:
    """Images ``(B, 3, H, W)`` in [-1, 1] -> ``uint8 (B, H, W, 3)`` as when they are saved to PNG."""
    x = ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()
