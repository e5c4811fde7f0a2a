"""Labelled comparison grids from generation folders: the same prompt (or class) and seed in a row, one
column per method."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from minority.errors import MinorityError
from minority.runs.grid import labelled_grid
from minority.runs.io import read_jsonl


def _key(row: dict) -> tuple:
    return (row.get("class_label", row.get("prompt_index")), row["seed"])


def pick_rows(keys: Sequence[tuple], max_rows: int) -> list[tuple]:
    """Up to ``max_rows`` (item, seed) keys, interleaving items so that several prompts appear."""
    by_item: dict = {}
    for k in keys:
        by_item.setdefault(k[0], []).append(k)
    picked, depth = [], 0
    while len(picked) < max_rows and any(depth < len(v) for v in by_item.values()):
        for v in by_item.values():
            if depth < len(v) and len(picked) < max_rows:
                picked.append(v[depth])
        depth += 1
    return picked


def comparison_grid(runs: dict[str, Path], path: str | Path, title: str, max_rows: int = 8, cell: int = 96) -> Path:
    """Write a grid of the images that every run in ``runs`` (column name -> generation folder) has in common."""
    manifests = {name: {_key(r): r for r in read_jsonl(Path(folder) / "manifest.jsonl")} for name, folder in runs.items()}
    if not manifests:
        raise MinorityError("No generation to put in a grid.")
    first = next(iter(manifests.values()))
    common = [k for k in first if all(k in m for m in manifests.values())]
    if not common:
        raise MinorityError("The generations share no (prompt, seed) pair: they cannot be compared in a grid.")
    rows, labels = [], []
    for key in pick_rows(common, max_rows):
        row = first[key]
        rows.append([_open(Path(runs[name]) / manifests[name][key]["file"]) for name in runs])
        what = row.get("prompt") or (f"class {row['class_label']}" if row.get("class_label") is not None else "unconditional")
        labels.append(f"{what} (seed {row['seed']})")
    grid = labelled_grid(rows, list(runs), labels, cell=cell, title=title)
    grid.save(path)
    return Path(path)


def _open(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")
