"""Declared parameters: each setting is declared once, on a dataclass field, with its default, help text, and
allowed choices or numeric range; :func:`validate_fields` checks an instance against those declarations (finite
numbers, inside the range, one of the choices). Method hyperparameters and the run's sampling settings use it,
and the CLI builds its typed flags from the same declarations.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from minority.errors import MinorityError


@dataclass(frozen=True)
class Range:
    """Allowed interval of a numeric hyperparameter (``None`` = unbounded on that side)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, v: float) -> bool:
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return not (self.high is not None and (v >= self.high if self.high_open else v > self.high))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        lo, hi = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {lo}{self.low:g}, {self.high:g}{hi}"


def hyperparameter(default: Any, help: str, *, choices: tuple | None = None, low: float | None = None,
                   high: float | None = None, low_open: bool = False, high_open: bool = False,
                   keywords: tuple[str, ...] = ()) -> Any:
    """Declare a hyperparameter field: its default, help text, allowed ``choices`` or numeric range
    ``[low, high]`` (``low_open``/``high_open`` exclude the bound), and string ``keywords`` a numeric field
    also accepts (e.g. ``perturb="annealed"``)."""
    rng = Range(low, high, low_open, high_open) if (low is not None or high is not None) else None
    meta = {"help": help, "choices": choices, "range": rng, "keywords": keywords}
    return field(default=default, metadata=meta)


def value_type(f: dataclasses.Field, owner: type) -> type:
    """The declared scalar type of a field (``int``, ``float``, ``str`` or ``bool``), ``Optional`` unwrapped."""
    hints = typing.get_type_hints(owner)
    t = hints[f.name]
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return args[0] if args else t


def check_value(name: str, value: Any, f: dataclasses.Field, kind: type) -> Any:
    """Validate one value against its field's declaration; returns it (ints accepted for floats)."""
    meta = f.metadata
    if value is None:
        if f.default is None:
            return None
        raise MinorityError(f"{name} needs a value (default {f.default!r}).")
    if isinstance(value, str) and value in meta.get("keywords", ()):
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise MinorityError(f"{name} must be true or false (got {value!r}).")
        return value
    if kind in (int, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or isinstance(value, int))
        if not ok:
            words = f" or one of {', '.join(meta['keywords'])}" if meta.get("keywords") else ""
            raise MinorityError(f"{name} must be {'an integer' if kind is int else 'a number'}{words} (got {value!r}).")
        if not math.isfinite(value):
            raise MinorityError(f"{name} must be a finite number (got {value}).")
        rng = meta.get("range")
        if rng is not None and not rng.contains(value):
            raise MinorityError(f"{name} must be {rng} (got {value}).")
        return float(value) if kind is float else value
    if not isinstance(value, str):
        raise MinorityError(f"{name} must be a string (got {value!r}).")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise MinorityError(f"{name} must be one of {', '.join(map(str, choices))} (got {value!r}).")
    return value


def validate_fields(obj: Any) -> None:
    """Check (and normalise: ints accepted for floats) every field of the frozen dataclass ``obj`` in place."""
    for f in dataclasses.fields(obj):
        value = check_value(f.name, getattr(obj, f.name), f, value_type(f, type(obj)))
        object.__setattr__(obj, f.name, value)
