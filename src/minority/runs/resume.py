"""``--resume``: is the earlier run in ``--out`` the same generation as this one?

Everything that changes an image must match (model, method, resolved hyperparameters, steps, guidance, size,
precision, prompts, seeds, negative prompts); the batch size, the device and the number of processes may differ.
"""

from __future__ import annotations

import json
from pathlib import Path

from minority.errors import MinorityError

#: config.json keys that must be equal, with the flag that sets each (for the error message).
COMPARED = {
    "model": "--model", "lightning_unet": "--lightning-unet", "dtype": "--dtype", "method": "--method",
    "params": "method flags", "steps": "--steps", "guidance": "--guidance", "height": "--height",
    "width": "--width", "negative_prompt": "--negative-prompt", "prompts": "prompts / --prompts-file",
    "class_labels": "--class-label", "seeds": "--seed/--seeds/--images-per-prompt",
    "prompt_seeds": "per-prompt seeds (prompts file)", "negative_prompts": "per-prompt negative prompts (prompts file)",
}


def _normal(value):
    return json.loads(json.dumps(value, default=str))


def comparable(config: dict) -> dict:
    """The compared values of a ``config.json`` dict: resolved values where the run recorded them."""
    resolved = config.get("resolved") or {}
    return {k: _normal(resolved.get(k, config.get(k))) for k in COMPARED}


def _describe(key: str, old, new) -> str:
    if isinstance(old, list) and isinstance(new, list) and len(old) > 3:
        if len(old) != len(new):
            return f"{len(old)} {key} then, {len(new)} now"
        i = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
        return f"first difference at index {i}: {old[i]!r} then, {new[i]!r} now"
    return f"{old!r} then, {new!r} now"


def check_compatible(old_config: dict, new_config: dict, out: Path) -> None:
    """Raise :class:`MinorityError` naming the first differing key between an earlier and this run."""
    old, new = comparable(old_config), comparable(new_config)
    for key, flag in COMPARED.items():
        if key not in old_config and key not in (old_config.get("resolved") or {}) and not new[key]:
            continue  # written by an older minority that did not have this key
        if old[key] != new[key]:
            raise MinorityError(
                f"--resume: {key} differs from the earlier run in {out} ({_describe(key, old[key], new[key])}): "
                f"pass the same {flag}, or choose another --out (or --overwrite to start over).")


def read_config(out: Path) -> dict | None:
    """The earlier run's ``config.json`` in ``out`` (None when there is none)."""
    path = Path(out) / "config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise MinorityError(f"--resume: cannot read {path} ({err}): restore it, or start over with --overwrite.") from err
    if not isinstance(cfg, dict):
        raise MinorityError(f"--resume: {path} is not a minority config: start over with --overwrite.")
    return cfg
