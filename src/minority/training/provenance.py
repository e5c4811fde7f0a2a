"""``provenance.json`` of an exported model: how it was made and how good it is."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch


def data_fingerprint(root: Path) -> dict[str, Any]:
    """Folder, file names, sizes and sha256 of the idx files (cheap: ~30 MB)."""
    files = {}
    for p in sorted(Path(root).iterdir()):
        if "idx" in p.name:
            files[p.name] = {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
    return {"dataset": "Fashion-MNIST", "root": str(root), "files": files}


def command_line(name: str, argv: list[str] | None = None) -> str:
    """The reproducing command: ``minority train NAME ...`` (the original argv when run from the CLI)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "train" in argv:
        argv = argv[argv.index("train") + 1 :]
    if not argv or argv[0] != name:
        argv = [name, *argv]
    return "minority train " + shlex.join(argv)


def write_provenance(folder: str | Path, *, name: str, config: Any, steps: dict[str, int], wall_s: float,
                     data: dict[str, Any], metrics: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Write ``folder/provenance.json``; returns its path."""
    import diffusers
    import transformers

    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    doc = {
        "name": name,
        "command": command_line(name),
        "seed": cfg.get("seed"),
        "steps": steps,
        "wall_time_s": round(wall_s, 1),
        "data": data,
        "metrics": metrics,
        "config": cfg,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "software": {"python": platform.python_version(), "torch": torch.__version__,
                     "diffusers": diffusers.__version__, "transformers": transformers.__version__},
        "hardware": {"device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
                     "machine": platform.machine()},
        **(extra or {}),
    }
    path = Path(folder) / "provenance.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def finish_export(run, out: Path, *, name: str, config: Any, data_root: str | Path, metrics: dict[str, Any],
                  phases: tuple[str, ...]) -> Path:
    """The common end of every training export: log the metrics, write ``out/provenance.json`` (steps, wall time,
    data fingerprint, seconds per step of ``phases``), copy the loss plot beside the weights, close the run."""
    import shutil

    run.log(f"exported to {out}; metrics {metrics}")
    write_provenance(out, name=name, config=config, steps=dict(run.state["steps"]), wall_s=run.wall_s,
                     data=data_fingerprint(data_root), metrics=metrics,
                     extra={"seconds_per_step": {p: run.seconds_per_step(p) for p in phases}})
    shutil.copy(run.dir / "loss.png", out / "loss.png")
    run.close()
    return out
