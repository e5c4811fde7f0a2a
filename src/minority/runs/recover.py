"""``--resume`` without (all of) ``manifest.jsonl``: rebuild the missing rows from the rows embedded in the images
(:mod:`minority.runs.pngmeta`), and count the damaged images that will be redone."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from minority.runs.io import image_file_ok
from minority.runs.manifest import entry_complete, entry_key
from minority.runs.pngmeta import read_row

log = logging.getLogger("minority")


@dataclass
class Recovery:
    """Rows rebuilt from images (by job) and the number of image files that are damaged (truncated, corrupt)."""

    rows: dict = field(default_factory=dict)
    damaged: int = 0


def recover_rows(out: str | Path, wanted: Iterable[tuple[tuple[int, int], str]],
                 accept: Callable[[tuple[int, int], dict], bool]) -> Recovery:
    """For each ``(job, relative file)`` without a manifest row: the row embedded in the image when the image is
    intact, its row names that job and file (``accept(job, row)``: the same checks as a manifest row) and its
    token file (if any) is intact; an image that does not read back counts as damaged."""
    out = Path(out)
    found = Recovery()
    for job, rel in wanted:
        path = out / rel
        if not path.exists():
            continue
        row = read_row(path)
        if row is None:
            found.damaged += not image_file_ok(path)  # intact but without a row (older minority): redone quietly
            continue
        row.pop("seconds", None)
        if (entry_key(row) == tuple(job) and row.get("file") == rel and accept(job, row)
                and entry_complete(out, row)):
            found.rows[job] = row
    return found


def report_recovery(recovered: int, damaged: int) -> None:
    """Say what ``--resume`` found besides the manifest (nothing when there is nothing to say)."""
    if recovered:
        log.warning("Recovered %d image%s missing from manifest.jsonl from their PNG metadata.", recovered,
                    "s" if recovered != 1 else "")
    if damaged:
        log.warning("%d damaged image%s will be regenerated.", damaged, "s" if damaged != 1 else "")
