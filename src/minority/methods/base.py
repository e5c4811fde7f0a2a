"""What a method is: a frozen dataclass whose fields are its hyperparameters and whose methods are its algorithm.

A hyperparameter is declared once, on its field, with :func:`minority.core.params.hyperparameter` (default, help, choices, range).
The declarations are the single source of the CLI flags (``--kebab-case``, typed by the field), of the
Python keyword arguments, of the values recorded in ``config.json``/the manifest, and of validation:
:meth:`Method.__post_init__` refuses NaN/inf, values outside the declared range and unknown choices for every
field of every method, in one place. Checks that need the loaded model or the run (a tokenizer, the guidance)
go in :meth:`Method.check`.

The algorithm: :meth:`Method.hooks` returns per-step hooks for the one sampling loop
(:func:`minority.core.sampling.sample`); :meth:`Method.resolved` fills defaults that depend on the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from minority.core.params import hyperparameter, validate_fields  # noqa: F401  (hyperparameter: re-exported)
from minority.errors import MinorityError


@dataclass(frozen=True)
class Method:
    """A sampling method: fields = hyperparameters (declared with :func:`hyperparameter`), methods = algorithm.

    Class attributes (not hyperparameters):
        name: the ``--method`` / ``method=`` name.
        summary: one line for ``--help`` and the README.
        kinds: model kinds it runs on: ``"text"`` (SD/SDXL), ``"pixel"`` (UNet2DModel).
        default_solver: the solver of the one loop it drives (``ddim``, ``cfgpp``, ``ancestral``), unless a
            ``solver`` hyperparameter says otherwise (see :meth:`solver_name`).
        default_negative_prompt: used when the user gives none (``null-prompt``).
        default_guidance: overrides the model's default guidance (``cfgpp``: λ 0.6).
        whole_prompt_batches: a batch must hold all images of a prompt (objectives over a prompt's images).
        presets: named settings from the method's paper (``--preset NAME``): hyperparameters, plus the run
            settings ``steps`` / ``spacing`` where the paper fixes them.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ("text",)
    default_solver: ClassVar[str] = "ddim"
    default_negative_prompt: ClassVar[str | None] = None
    default_guidance: ClassVar[float | None] = None
    whole_prompt_batches: ClassVar[bool] = False
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    #: preset keys that are run settings, not hyperparameters.
    RUN_SETTINGS: ClassVar[tuple[str, ...]] = ("steps", "spacing")

    @classmethod
    def preset(cls, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(hyperparameters, run settings)`` of the preset ``name``, or a one-line error listing them."""
        if name not in cls.presets:
            have = f"its presets: {', '.join(cls.presets)}" if cls.presets else "it has none"
            raise MinorityError(f"Method {cls.name!r} has no preset {name!r} ({have}).")
        values = cls.presets[name]
        return ({k: v for k, v in values.items() if k not in cls.RUN_SETTINGS},
                {k: v for k, v in values.items() if k in cls.RUN_SETTINGS})

    def __post_init__(self) -> None:
        validate_fields(self)  # every field: finite, in its declared range, one of its choices

    @classmethod
    def hyperparameters(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    def solver_name(self) -> str:
        """The solver this method's steps use (a resolved ``solver`` field, else the class's)."""
        return getattr(self, "solver", None) or type(self).default_solver

    def resolved(self, family: str) -> Method:
        """A copy with the model-dependent defaults (fields left None) filled in for ``family``."""
        return self

    def check(self, run: Any) -> None:
        """Checks that need the loaded model or the run (:class:`minority.pipelines.run.RunContext`)."""

    def hooks(self, run: Any) -> list:
        """Per-step hooks of the sampling loop for this run (none: the base sampler)."""
        return []

    def start(self, steps: int) -> tuple[float, int]:
        """How the loop starts on a grid of ``steps`` steps: ``(c, k)`` = multiply the initial sample z_T (drawn
        exactly as the base sampler draws it) by c and run the grid from index k (default ``(1.0, 0)``: all of
        it from z_T). Boost-and-Skip returns (γ, Δt)."""
        return 1.0, 0

    def min_steps(self) -> int:
        """The fewest sampling steps the method runs on (Boost-and-Skip: Δt + 1)."""
        return 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> Method:
        return dataclasses.replace(self, **changes)


def make(cls: type[Method], params: dict[str, Any]) -> Method:
    """``cls(**params)`` with a clear error for a name the method does not declare."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - names)
    if unknown:
        allowed = ", ".join(sorted(names)) or "none"
        raise MinorityError(f"Method {cls.name!r} has no parameter {unknown[0]!r} (its parameters: {allowed}).")
    return cls(**params)
