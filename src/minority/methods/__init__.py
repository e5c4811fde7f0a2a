"""Sampling methods: one frozen dataclass per method (fields = hyperparameters, methods = algorithm), registered
by name in :data:`METHODS`.

    from minority.methods import METHODS, make_method
    m = make_method("minority-prompt", lr=0.02)        # == MinorityPrompt(lr=0.02), validated on creation
"""

from __future__ import annotations

from typing import Any

from minority.errors import MinorityError
from minority.methods.base import Method, hyperparameter, make
from minority.methods.baselines import CFGPP, DDIM, Ancestral, NullPrompt
from minority.methods.boost_skip import BoostSkip
from minority.methods.cads import CADS
from minority.methods.minority_prompt import DiversePrompt, MinorityPrompt
from minority.methods.sgms import SGMS

METHODS: dict[str, type[Method]] = {
    m.name: m for m in (DDIM, NullPrompt, CADS, CFGPP, MinorityPrompt, DiversePrompt, SGMS, Ancestral, BoostSkip)
}

ALIASES: dict[str, str] = {"euler": "ddim"}  # on flow models (SD3 / FLUX) `ddim` is the Euler flow step (SPEC §3.5)


def register_method(method: type[Method]) -> type[Method]:
    """Add (or replace) a method class in :data:`METHODS`; usable as a class decorator."""
    if not (isinstance(method, type) and issubclass(method, Method) and method.name):
        raise MinorityError("register_method takes a Method subclass with a `name` (see minority.methods.base).")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> type[Method]:
    """The method class called ``name`` (or an alias, ``euler`` = ``ddim``), or a clear error listing the names."""
    name = ALIASES.get(name, name)
    if name not in METHODS:
        raise MinorityError(f"Unknown method {name!r}: choose one of {', '.join(sorted(METHODS))}.")
    return METHODS[name]


def all_methods() -> dict[str, type[Method]]:
    """Every registered method class by name."""
    return dict(METHODS)


def make_method(method: str | Method, params: dict[str, Any] | None = None, **kwargs: Any) -> Method:
    """A validated method object from a name and its hyperparameters (or an existing object, unchanged)."""
    params = {**(params or {}), **kwargs}
    if isinstance(method, Method):
        return make(type(method), {**method.to_dict(), **params}) if params else method
    return make(get_method(method), params)


__all__ = ["ALIASES", "CADS", "CFGPP", "DDIM", "METHODS", "SGMS", "Ancestral", "BoostSkip", "DiversePrompt", "Method", "MinorityPrompt",
           "NullPrompt", "all_methods", "get_method", "hyperparameter", "make_method", "register_method"]
