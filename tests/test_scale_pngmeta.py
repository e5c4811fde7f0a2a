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


def test_resume_rebuilds_lost_manifest_from_pngs(tiny_sd_dir, tmp_path, capsys, caplog):
    out = tmp_path / "o"
    args = ["generate", "a bag", "a coat", "--model", str(tiny_sd_dir), "--steps", "2", "--seeds", "0-2",
            "--out", str(out)]
    assert main(args) == 0
    rows, images = _rows(out), _images(out)
    capsys.readouterr()
    (out / "manifest.jsonl").unlink()
    damaged = out / "images/00001_000002.png"
    damaged.write_bytes(damaged.read_bytes()[:-30])  # truncated
    assert main([*args, "--resume"]) == 0
    assert "Recovered 5 images missing from manifest.jsonl from their PNG metadata." in caplog.text
    assert "1 damaged image will be regenerated." in caplog.text
    assert "Wrote 1 images, 5 already complete" in capsys.readouterr().out
    assert _images(out) == images and _rows(out) == rows
    # a torn manifest: the complete lines are kept, the rest comes from the images
    text = (out / "manifest.jsonl").read_text()
    (out / "manifest.jsonl").write_text(text[: text.index("\n", text.index("\n") + 1) + 20])
    caplog.clear()
    assert main([*args, "--resume"]) == 0
    assert "Recovered 4 images" in caplog.text and "damaged" not in caplog.text
    assert "Wrote 0 images, 6 already" in capsys.readouterr().out
    assert _images(out) == images and _rows(out) == rows


def test_recovered_rows_pass_the_manifest_checks(tiny_sd_dir, tmp_path, capsys, caplog):
    """Without manifest.jsonl and config.json, an image whose row names another prompt or another file is redone."""
    out = tmp_path / "o"
    args = ["generate", "a bag", "a coat", "--model", str(tiny_sd_dir), "--steps", "2", "--seeds", "0-1",
            "--out", str(out)]
    assert main(args) == 0
    images = _images(out)
    (out / "manifest.jsonl").unlink()
    (out / "config.json").unlink()
    (out / "images/00000_000001.png").write_bytes(images["00000_000000.png"])  # another job's image and row
    capsys.readouterr()
    assert main(["generate", "a bag", "a hat", *args[3:], "--resume"]) == 0
    assert "Recovered 1 image missing" in caplog.text and "damaged" not in caplog.text
    assert "Wrote 3 images, 1 already complete" in capsys.readouterr().out
    assert _images(out)["00000_000001.png"] == images["00000_000001.png"]
    assert [r["prompt"] for r in _rows(out)] == ["a bag", "a bag", "a hat", "a hat"]
