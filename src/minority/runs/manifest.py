"""The generation manifest: ``manifest.jsonl`` plus per-process shards ``manifest.rank{r}.jsonl``.

An entry is complete when its line is in the merged manifest or in a shard AND its image (and token file, if
any) exists and reads back. Lines are appended only after their files were renamed into place, so a killed run
leaves at worst an image without a line (redone) or a temporary ``.NAME.tmp-*`` file (removed on resume).
Every rewrite of ``manifest.jsonl`` is atomic; shards are deleted only after the merged file holds their lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from minority.runs.io import atomic_write_bytes, image_file_ok, jsonl_bytes, read_jsonl

MANIFEST = "manifest.jsonl"
_SHARD_RE = re.compile(r"^manifest\.rank(\d+)\.jsonl$")

Key = tuple[int, int]


def manifest_path(out: Path) -> Path:
    """``OUT/manifest.jsonl``: the merged manifest (single-process runs append to it directly)."""
    return Path(out) / MANIFEST


def shard_path(out: Path, rank: int) -> Path:
    """``OUT/manifest.rank{rank}.jsonl``: the lines written by process ``rank``."""
    return Path(out) / f"manifest.rank{rank}.jsonl"


def shard_paths(out: Path) -> list[Path]:
    """Existing shard files, by rank."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if (m := _SHARD_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def entry_key(entry: dict) -> Key | None:
    """``(prompt_index, seed)`` of a manifest entry, or None for a foreign/incomplete line."""
    try:
        return int(entry["prompt_index"]), int(entry["seed"])
    except (KeyError, TypeError, ValueError):
        return None


def read_entries(out: Path) -> dict[Key, dict]:
    """All entries of the merged manifest and the shards, one per key (a later line wins)."""
    entries: dict[Key, dict] = {}
    for path in (manifest_path(out), *shard_paths(out)):
        for e in read_jsonl(path):
            k = entry_key(e)
            if k is not None and isinstance(e.get("file"), str):
                entries[k] = e
    return entries


def has_results(out: Path) -> bool:
    """True when ``out`` holds manifest lines of an earlier run (merged or sharded)."""
    return any(read_jsonl(p) for p in (manifest_path(out), *shard_paths(out)))


def entry_complete(out: Path, entry: dict) -> bool:
    """The entry's image exists and reads back (PNG chunks and checksums intact), and so does its token file."""
    out = Path(out)
    if not image_file_ok(out / entry["file"]):
        return False
    token = entry.get("token_file")
    return token is None or ((out / token).is_file() and (out / token).stat().st_size > 8)


def write_merged(out: Path, entries: Iterable[dict]) -> int:
    """Atomically replace ``manifest.jsonl`` with ``entries`` sorted by (prompt_index, seed); returns the count."""
    rows = sorted(entries, key=lambda e: entry_key(e) or (-1, -1))
    atomic_write_bytes(manifest_path(out), jsonl_bytes(rows))
    return len(rows)


def remove_shards(out: Path) -> None:
    """Delete every ``manifest.rank*.jsonl`` in ``out``."""
    for p in shard_paths(out):
        p.unlink(missing_ok=True)


def merge(out: Path, keep: Callable[[Key, dict], bool] = lambda k, e: True) -> dict[Key, dict]:
    """Merge the shards into ``manifest.jsonl`` (keeping the entries ``keep`` accepts), then delete the shards.

    Crash-safe: the merged file is complete before any shard is removed; a crash in between leaves duplicate
    lines that :func:`read_entries` collapses. Returns the kept entries.
    """
    kept = {k: e for k, e in read_entries(out).items() if keep(k, e)}
    write_merged(out, kept.values())
    remove_shards(out)
    return kept


def clean_temp_files(out: Path) -> list[Path]:
    """Remove the temporary ``.NAME.tmp-*`` files a killed run left in ``out`` and ``out/images``."""
    removed = []
    for folder in (Path(out), Path(out) / "images"):
        if folder.is_dir():
            for p in folder.glob(".*.tmp-*"):
                if p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p)
    return removed
