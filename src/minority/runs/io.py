"""Crash-safe file output: atomic writes (temporary name + rename) and flushed JSON-lines appends."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from minority.errors import MinorityError
from minority.runs.pngmeta import png_bytes


class OutputWriteError(MinorityError):
    """A file could not be written (disk full, permission denied, ...); files written before are intact."""


def _io_error(path: Path, err: OSError) -> OutputWriteError:
    reason = {28: "the disk is full", 13: "permission denied", 30: "the file system is read-only"}.get(
        err.errno, err.strerror or str(err))
    return OutputWriteError(f"Cannot write {path}: {reason}. Free space or choose another --out; files already written are intact.")


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and check that files can be created in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-", delete=True):
            pass
    except OSError as err:
        raise MinorityError(f"Output folder {path} is not writable ({err.strerror}): choose another --out.") from err
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise _io_error(path, err) from err


def atomic_write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def save_image_atomic(image, path: str | Path, text: str | None = None) -> None:
    """Save a PIL image as PNG atomically; ``text`` (its manifest row) goes in an iTXt chunk ``minority``."""

    atomic_write_bytes(path, png_bytes(image, text))


def append_jsonl(path: str | Path, obj: dict) -> None:
    """Append one JSON line and flush it to disk (the line is complete or absent)."""
    path = Path(path)
    line = json.dumps(obj, default=str) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise _io_error(path, err) from err


def jsonl_bytes(rows: list[dict]) -> bytes:
    """``rows`` as JSON-lines bytes (one compact object per line)."""
    return "".join(json.dumps(r, default=str) + "\n" for r in rows).encode("utf-8")


def image_file_ok(path: str | Path) -> bool:
    """True when ``path`` is an image file that reads back intact (a truncated or corrupt file is False)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()  # walks every chunk and checks the checksums, without decoding the pixels
        return True
    except Exception:  # noqa: BLE001 - any failure means "redo this image"
        return False


def read_jsonl(path: str | Path) -> list[dict]:
    """Read complete JSON lines (a truncated last line from a killed run is ignored)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
