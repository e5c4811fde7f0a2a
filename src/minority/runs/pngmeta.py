"""Each generated PNG carries its manifest row: an iTXt chunk ``minority`` holding the row as JSON (as
A1111 embeds ``parameters`` and ComfyUI ``prompt``/``workflow``), so a lost or torn ``manifest.jsonl`` can be
rebuilt from the images on ``--resume``.

The chunk holds the row without ``seconds`` (the time differs run to run; everything else is decided before
the image is written), so the PNG bytes stay identical between a fresh, a resumed and a sharded run. The
pixels, and every other chunk, are exactly what PIL writes without the text.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

KEY = "minority"
#: manifest fields not embedded (not reproducible from run to run).
NOT_EMBEDDED = ("seconds",)


def embedded_row(entry: dict) -> str:
    """The JSON text embedded in an image for its manifest ``entry``."""
    return json.dumps({k: v for k, v in entry.items() if k not in NOT_EMBEDDED}, default=str)


def png_bytes(image, text: str | None = None) -> bytes:
    """``image`` as PNG bytes, with ``text`` in an uncompressed iTXt chunk ``minority`` when given."""
    from PIL.PngImagePlugin import PngInfo

    info = None
    if text is not None:
        info = PngInfo()
        info.add_itxt(KEY, text)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def read_row(path: str | Path) -> dict | None:
    """The manifest row embedded in the PNG at ``path``, or None when the file is missing, damaged (any chunk
    fails its checksum, or it is truncated) or has no ``minority`` chunk."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            text = im.info.get(KEY) if im.format == "PNG" else None
            im.verify()
        row = json.loads(str(text)) if text is not None else None
    except Exception:  # noqa: BLE001 - anything unreadable is "not recoverable"
        return None
    return row if isinstance(row, dict) else None


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """``(type, payload)`` of every chunk of PNG ``data`` (checked CRCs); for tests and tools."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + payload) != crc:
            raise ValueError(f"bad CRC in chunk {kind!r}")
        chunks.append((kind, payload))
        pos += 12 + length
    return chunks
