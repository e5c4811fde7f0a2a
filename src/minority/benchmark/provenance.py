"""What a result needs to be trusted and repeated: software versions, machine, git commit, and the exact
commands (the benchmark itself and the equivalent ``minority generate`` / ``minority evaluate`` calls)."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("minority", "torch", "diffusers", "transformers", "numpy", "scipy", "scikit-learn", "pillow", "matplotlib",
            "efficientnet-lite-pytorch")


def versions() -> dict:
    """Installed versions of the relevant packages, Python, the OS, CPU/GPU and the git commit (if any)."""
    out: dict = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["cpu"] = _cpu_name()
    out["cpu_count"] = os.cpu_count()
    try:
        import torch

        out["torch_threads"] = torch.get_num_threads()
        out["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        out["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    out["git_commit"], out["git_dirty"] = _git_state()
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_state() -> tuple[str | None, bool | None]:
    """Commit of the source tree that holds this package, and whether it has uncommitted changes (read-only)."""
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return commit or None, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def shell_join(words: list[str]) -> str:
    """A shell command line from its words."""
    return shlex.join([str(w) for w in words])


def invoked_command() -> str | None:
    """``sys.argv`` as a command line when this process is the ``minority`` CLI (else None)."""
    prog = Path(sys.argv[0]).name if sys.argv else ""
    if prog in ("minority", "__main__.py"):
        return shell_join(["minority", *sys.argv[1:]])
    return None


def generate_command(model: str, method: str, params: dict, prompts: list[str], class_labels: list[int],
                     seeds: list[int], steps: int | None, guidance: float | None, device: str, batch_size: int,
                     out: str, deterministic: bool = False) -> str:
    """The ``minority generate`` call that produces the same images as a benchmark arm."""
    words = ["minority", "generate", *prompts, "--model", model, "--method", method]
    for c in class_labels:
        words += ["--class-label", str(c)]
    words += ["--seeds", _seed_spec(seeds)]
    if steps is not None:
        words += ["--steps", str(steps)]
    if guidance is not None:
        words += ["--guidance", str(guidance)]
    for k, v in params.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            words.append(flag if v else "--no-" + k.replace("_", "-"))
        else:
            words += [flag, str(v)]
    words += ["--device", device, "--batch-size", str(batch_size), "--out", out, "--overwrite"]
    if deterministic:
        words.append("--deterministic")
    return shell_join(words)


def evaluate_command(images: str, reference: str | None, metrics: list[str], features: str, settings: dict,
                     out: str, device: str) -> str:
    """The ``minority evaluate`` call that computes the same metrics as a benchmark evaluation."""
    words = ["minority", "evaluate", "--images", images]
    if reference is not None:
        words += ["--reference", reference]
    words += ["--metrics", ",".join(metrics), "--features", features, "--device", device, "--out", out]
    for k, v in settings.items():
        words += ["--set", setting_word(k, v)]
    return shell_join(words)


def setting_word(key: str, value) -> str:
    """``KEY=VALUE`` for ``--set``/``--param`` (JSON for non-strings; Python objects named, not reproducible)."""
    import json

    if isinstance(value, str):
        return f"{key}={value}"
    try:
        return f"{key}={json.dumps(value)}"
    except (TypeError, ValueError):
        return f"{key}=<python {type(value).__name__} {getattr(value, '__name__', '')}: not reproducible from the CLI>"


def _seed_spec(seeds: list[int]) -> str:
    if seeds and seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 1:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(str(s) for s in seeds)
