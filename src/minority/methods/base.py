"""Sampling methods: a registry of named methods, each with a frozen hyperparameter dataclass.

A :class:`Method` names its solver, its default negative prompt / guidance, and builds the per-step
hooks from its config. The CLI turns every config field into a ``--kebab-case`` flag (help and
default taken from the field), and the Python API accepts the same names as keyword arguments.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from minority.errors import MinorityError


def param(default: Any, help: str, choices: tuple | None = None) -> Any:
    """A hyperparameter field with its help text (and allowed values)."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class MethodConfig:
    """Base class of method hyperparameters; subclasses add fields via :func:`param`."""

    def validate(self, context: MethodContext) -> None:
        """Raise :class:`MinorityError` for invalid values (``context`` gives steps, guidance, batch)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class MethodContext:
    """What a method sees when it builds its hooks.

    Attributes:
        components: the loaded model (:class:`minority.pipelines.loading.Components`).
        prompts: one prompt per sample (B,) — or class-label strings for pixel models.
        negative_prompts: per-sample negative prompts or None.
        seeds: per-sample seeds.
        steps, guidance: sampling steps T and guidance w.
        pairs: the (t, t_next) grid.
        prompt_encoder: text encoder wrapper (None for pixel models).
        group_ids: per-sample prompt index (samples with equal id share a prompt).
    """

    components: Any
    prompts: list[str]
    negative_prompts: list[str] | None
    seeds: list[int]
    steps: int
    guidance: float
    pairs: list[tuple[int, int]]
    prompt_encoder: Any = None
    group_ids: list[int] | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """A named sampling method.

    Attributes:
        name: CLI/API name (``--method``).
        summary: one line for ``--help`` and the README.
        config: its hyperparameter dataclass.
        solver: ``"ddim"``, ``"cfgpp"`` or ``"ancestral"``.
        build_hooks: ``(config, context) -> list[Hook]``.
        default_negative_prompt: used when the user gives none (``null-prompt``: "commonly-looking").
        default_guidance: overrides the model family's default guidance (``cfgpp``: 0.6).
        kinds: model kinds it supports: ``"text"`` (SD/SDXL), ``"pixel"`` (UNet2DModel).
        whole_prompt_batches: batches must hold all images of a prompt (objectives over a prompt's images).
    """

    name: str
    summary: str
    config: type[MethodConfig]
    solver: str = "ddim"
    build_hooks: Callable[[Any, MethodContext], list] = lambda cfg, ctx: []
    default_negative_prompt: str | None = None
    default_guidance: float | None = None
    kinds: tuple[str, ...] = ("text",)
    whole_prompt_batches: bool = False

    def solver_for(self, config: MethodConfig) -> str:
        """The solver: the config's ``solver`` field when it has one, else the method's."""
        return getattr(config, "solver", None) or self.solver


_METHODS: dict[str, Method] = {}
_PLUGINS = ("minority.methods.minority_prompt", "minority.methods.sgms")


def register_method(method: Method) -> Method:
    """Add (or replace) a method in the registry; returns it."""
    _METHODS[method.name] = method
    return method


def _load_plugins() -> None:
    for mod in _PLUGINS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:
                raise


def all_methods() -> dict[str, Method]:
    """Every registered method by name."""
    _load_plugins()
    return dict(_METHODS)


def get_method(name: str) -> Method:
    """The method called ``name``, or a clear error listing the valid names."""
    methods = all_methods()
    if name not in methods:
        raise MinorityError(f"Unknown method {name!r}: choose one of {', '.join(sorted(methods))}.")
    return methods[name]


def make_config(method: Method, params: dict[str, Any]) -> MethodConfig:
    """Build ``method``'s config from keyword params; unknown names are an error."""
    names = {f.name for f in dataclasses.fields(method.config)}
    unknown = sorted(set(params) - names)
    if unknown:
        allowed = ", ".join(sorted(names)) or "none"
        raise MinorityError(f"Method {method.name!r} has no parameter {unknown[0]!r} (its parameters: {allowed}).")
    for f in dataclasses.fields(method.config):
        choices = f.metadata.get("choices")
        if f.name in params and choices and params[f.name] not in choices:
            raise MinorityError(f"{f.name} must be one of {', '.join(map(str, choices))} (got {params[f.name]!r}).")
    return method.config(**params)


# --------------------------------------------------------------------------------------------------
# Baselines (SPEC §3.3)


@dataclass(frozen=True)
class NoParams(MethodConfig):
    """No hyperparameters beyond the generation settings."""


@dataclass(frozen=True)
class CADSConfig(MethodConfig):
    tau1: float = param(0.6, "CADS τ1: below this τ = 1 − i/T the conditioning is clean (γ = 1)")
    tau2: float = param(0.9, "CADS τ2: above this τ the conditioning is fully noised (γ = 0)")
    noise_scale: float = param(0.25, "CADS s: noise scale added to the text embedding")
    psi: float = param(1.0, "CADS ψ: mix of the rescaled (ψ) and raw (1−ψ) noised embedding")
    rescale: bool = param(True, "CADS: rescale the noised embedding to the clean one's mean and std")
    both_branches: bool = param(False, "CADS: also noise the unconditional (negative-prompt) embedding")

    def validate(self, context: MethodContext) -> None:
        if not 0.0 <= self.tau1 <= self.tau2 <= 1.0:
            raise MinorityError(f"CADS needs 0 <= tau1 <= tau2 <= 1 (got tau1={self.tau1}, tau2={self.tau2}).")
        if self.noise_scale < 0:
            raise MinorityError(f"noise_scale must be >= 0 (got {self.noise_scale}).")
        if not 0.0 <= self.psi <= 1.0:
            raise MinorityError(f"psi must be in [0, 1] (got {self.psi}).")


def _cads_hooks(cfg: CADSConfig, ctx: MethodContext) -> list:
    from minority.methods.cads import CADSHook

    return [CADSHook(cfg.tau1, cfg.tau2, cfg.noise_scale, cfg.psi, cfg.rescale, cfg.both_branches)]


@dataclass(frozen=True)
class CFGPPConfig(MethodConfig):
    def validate(self, context: MethodContext) -> None:
        if not 0.0 <= context.guidance <= 1.0:
            raise MinorityError(f"cfgpp takes --guidance λ in [0, 1] (got {context.guidance}); 0.6 is a good default.")


register_method(Method("ddim", "deterministic DDIM (η = 0) with classifier-free guidance", NoParams,
                       kinds=("text", "pixel")))
register_method(Method("null-prompt", "DDIM with the negative prompt \"commonly-looking\" (MP §4.1)", NoParams,
                       default_negative_prompt="commonly-looking"))
register_method(Method("cads", "condition-annealed sampling: noised text embedding early on (Sadat et al.)", CADSConfig,
                       build_hooks=_cads_hooks))
register_method(Method("cfgpp", "CFG++: denoise with λ-guided ε, re-noise with ε_∅ (Chung et al.)", CFGPPConfig,
                       solver="cfgpp", default_guidance=0.6))
