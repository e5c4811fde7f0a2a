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
    "model": "--model", "lightning_unet": "--lightning-unet", "model_config": "--config", "dtype": "--dtype", "method": "--method",
    "params": "method flags", "steps": "--steps", "spacing": "--spacing", "guidance": "--guidance",
    "height": "--height", "width": "--width", "negative_prompt": "--negative-prompt", "prompts": "prompts / --prompts-file",
    "class_labels": "--class-label", "seeds": "--seed/--seeds/--images-per-prompt",
    "prompt_seeds": "per-prompt seeds (prompts file)", "negative_prompts": "per-prompt negative prompts (prompts file)",
}
#: values of keys an older minority did not write (what it ran with).
_OLD_DEFAULTS = {"spacing": "scheduler"}


def _normal(value):
    return json.loads(json.dumps(value, default=str))


def comparable(config: dict) -> dict:
    """The compared values of a ``config.json`` dict: resolved values where the run recorded them."""
    resolved = config.get("resolved") or {}
    return {k: _normal(resolved.get(k, config.get(k, _OLD_DEFAULTS.get(k)))) for k in COMPARED}


_UNSET = "(unset)"


def _short(value, limit: int = 40) -> str:
    text = _UNSET if value is _UNSET else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _changes(key: str, old, new) -> list[str]:
    """``name: old → new`` for a differing value; dicts (method parameters) name only their differing keys,
    long lists the first differing position."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new), key=str)
        return [f"{k}: {_short(old.get(k, _UNSET))} → {_short(new.get(k, _UNSET))}"
                for k in keys if k not in old or k not in new or old[k] != new[k]]
    if isinstance(old, list) and isinstance(new, list) and len(old) > 3:
        if len(old) != len(new):
            return [f"{key}: {len(old)} → {len(new)} values"]
        i = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
        return [f"{key}[{i}]: {_short(old[i])} → {_short(new[i])}"]
    return [f"{key}: {_short(old)} → {_short(new)}"]


def check_compatible(old_config: dict, new_config: dict, out: Path) -> None:
    """Raise :class:`MinorityError` naming every differing setting between an earlier and this run, old → new
    (one line)."""
    old, new = comparable(old_config), comparable(new_config)
    keys = []
    for key in COMPARED:
        if key not in old_config and key not in (old_config.get("resolved") or {}) and not new[key]:
            continue  # written by an older minority that did not have this key
        if old[key] != new[key]:
            keys.append(key)
    if not keys:
        return
    if "method" in keys and "params" in keys:
        keys.remove("params")  # another method has other parameters: the method change says it all
    changes = [c for k in keys for c in _changes(k, old[k], new[k])]
    flags = ", ".join(dict.fromkeys(COMPARED[k] for k in keys))
    raise MinorityError(
        f"--resume: settings differ from the earlier run in {out} ({'; '.join(changes)}): pass the same {flags}, "
        "or choose another --out (or --overwrite to start over).")


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
