"""Image detail as PNG-compressed size: the confound of likelihood-based rarity.

Negative log-likelihood correlates strongly with how much detail an image holds, which lossless compressed size
measures (Karczewski et al., ICML 2025): a "rarer by bits/dim" claim needs the compressed size beside it.
:func:`png_bits_per_pixel` re-encodes the decoded pixels with fixed settings (so the stored file's own
compression level does not matter).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from minority.errors import MinorityError

PNG_COMPRESS_LEVEL = 9


def png_bits_per_pixel(image: np.ndarray) -> float:
    """8·|PNG(image)| / (H·W): bits per pixel of ``image`` (uint8 ``(H, W)`` or ``(H, W, C)``) losslessly
    re-encoded as PNG at zlib level 9 (headers included; per pixel, not per channel)."""
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or a.shape[0] < 1 or a.shape[1] < 1:
        raise MinorityError(f"png_bits_per_pixel needs a uint8 (H, W[, C]) image, got {a.dtype} {a.shape}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return 8.0 * buf.tell() / (a.shape[0] * a.shape[1])
