"""Issue 15: every PNG carries its manifest row (iTXt ``minority``) with unchanged pixels, and ``--resume``
rebuilds a lost or torn manifest.jsonl from the images (same checks as manifest rows), reporting recovered and
damaged images."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from minority.cli.main import main


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def _rows(out):
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in _lines(out / "manifest.jsonl")]


def _images(out):
    return {p.name: p.read_bytes() for p in sorted((out / "images").glob("*.png"))}


def test_png_carries_its_row_and_pixels_are_unchanged(tiny_sd_dir, tmp_path):
    from minority.runs.pngmeta import png_bytes, png_chunks, read_row

    out = tmp_path / "o"
    assert main(["generate", "a bag", "--model", str(tiny_sd_dir), "--steps", "2", "--seeds", "0-1",
                 "--out", str(out)]) == 0
    for row in _rows(out):
        path = out / row["file"]
        assert read_row(path) == row
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            plain = png_bytes(Image.fromarray(np.array(im)))  # the same pixels saved without the text
        chunks = png_chunks(data)
        assert [c for c in chunks if c[0] != b"iTXt"] == png_chunks(plain)
        assert [c[1].split(b"\0")[0] for c in chunks if c[0] == b"iTXt"] == [b"minority"]
