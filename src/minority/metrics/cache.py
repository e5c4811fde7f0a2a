"""On-disk cache of extracted features, keyed by the extractor and the images' contents.

A cache entry holds every array one extractor produced for one image set (``features``, ``spatial``,
``logits``, ... and a ``valid`` mask). Its key is the SHA-256 of: a format version, the extractor's
``cache_id()`` (name, preprocessing and a digest of its weights) and the ordered per-image content
digests. Changing any image, adding or removing one, reordering, or changing the weights therefore gives
a new key (invalidation); unchanged inputs load the saved arrays (a hit).

The same store also keeps per-image PF-ODE likelihoods (``likelihood`` metric), keyed by a digest of the
model's weights, the solver settings and the images with their seeds and conditioning, so that a later
evaluation (another reference set, or on another machine with the folder copied) does not integrate again.

Location: ``cache_dir`` argument, else ``$MINORITY_CACHE_DIR``, else ``~/.cache/minority/features``.
Entries are ``<key>.npz`` files written atomically; delete the folder to clear the cache.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

CACHE_ENV = "MINORITY_CACHE_DIR"
CACHE_VERSION = "minority-features-v1"


def default_cache_dir() -> Path:
    """``$MINORITY_CACHE_DIR`` or ``~/.cache/minority/features``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "minority" / "features"


def state_digest(*modules: torch.nn.Module | None) -> str:
    """SHA-1 hex digest of the modules' state dicts (names, dtypes, shapes and values, in order).

    Identical weights give the same digest on any device; ``None`` entries are skipped.
    """
    h = hashlib.sha1()
    for module in modules:
        if module is None:
            continue
        for k, v in sorted(module.state_dict().items()):
            h.update(k.encode())
            t = v.detach().cpu().contiguous()
            h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class FeatureCache:
    """Feature arrays saved as ``<root>/<key>.npz``; ``hits`` / ``misses`` count lookups."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(extractor_id: str, digests: Sequence[str], extra: str = "") -> str:
        """SHA-256 hex key of the extractor identity, the ordered image digests and ``extra``."""
        h = hashlib.sha256()
        for part in (CACHE_VERSION, extractor_id, extra, str(len(digests))):
            h.update(part.encode("utf-8") + b"\0")
        for d in digests:
            h.update(d.encode("utf-8") + b"\n")
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """The saved arrays, or ``None`` (counted as a miss) if absent or unreadable."""
        p = self.path(key)
        if p.is_file():
            try:
                with np.load(p, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
                self.hits += 1
                return arrays
            except (OSError, ValueError, EOFError):
                pass  # a broken entry is recomputed and overwritten
        self.misses += 1
        return None

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> Path:
        """Write ``arrays`` atomically to ``<root>/<key>.npz``; returns the path."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, self.path(key))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self.path(key)
