"""Labelled image grids (rows = prompt/seed, columns = methods) as PNG."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def labelled_grid(
    rows: Sequence[Sequence[Image.Image]],
    col_labels: Sequence[str],
    row_labels: Sequence[str],
    cell: int = 96,
    title: str | None = None,
) -> Image.Image:
    """Compose ``rows[r][c]`` into one image with column headers and row labels.

    Args:
        rows: images per row (all rows the same length as ``col_labels``); upscaled to ``cell`` pixels
            with nearest-neighbour (small models draw small images).
        col_labels, row_labels: text above each column / left of each row.
        cell: side of each cell in pixels.
        title: optional line above everything.
    """
    font, small = _font(14), _font(11)
    label_w = max(120, 7 * max((len(s) for s in row_labels), default=0) // 2 + 10)
    head_h = 24 + (22 if title else 0)
    pad = 4
    W = label_w + len(col_labels) * (cell + pad) + pad
    H = head_h + len(rows) * (cell + pad) + pad
    canvas = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 4), title, fill="black", font=font)
    for c, label in enumerate(col_labels):
        draw.text((label_w + c * (cell + pad) + pad, head_h - 20), label, fill="black", font=font)
    for r, (imgs, label) in enumerate(zip(rows, row_labels)):
        y = head_h + r * (cell + pad) + pad
        words, line, lines = label.split(), "", []
        for w in words:
            if len(line) + len(w) + 1 > label_w // 7:
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}".strip()
        lines.append(line)
        for k, ln in enumerate(lines[:6]):
            draw.text((pad, y + 2 + 13 * k), ln, fill="black", font=small)
        for c, img in enumerate(imgs):
            tile = img.convert("RGB").resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (label_w + c * (cell + pad) + pad, y))
    return canvas
