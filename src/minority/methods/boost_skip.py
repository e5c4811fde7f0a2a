"""Boost-and-Skip: guidance-free minority sampling (Um, Kim & Ye, ICML 2025; SPEC §3.6).

Two changes to the base sampler and nothing else — no extra network call:

* **boost**: the initial noise z_T ~ N(0, I) (drawn exactly as the base sampler draws it, same generator order)
  is multiplied by γ > 1: z ← γ z_T;
* **skip**: the first Δt steps of the S-step grid t_0 > t_1 > … are skipped; the chosen sampler (ancestral,
  DDIM) starts at grid index Δt, taking γ z_T as the sample at timestep t_Δt, and runs the remaining S − Δt steps.

This is the authors' rule (their sampling loop scales the noise by γ and drops the first Δt respaced indices).
γ = 1, Δt = 0 is exactly the base sampler. The authors' settings (250 respaced ancestral steps): see
:data:`BOOST_SKIP_PRESETS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from minority.errors import MinorityError
from minority.methods.base import Method, hyperparameter

#: The authors' settings (BnS README; 250 respaced ancestral steps, ``--spacing adm`` on guided-diffusion models).
BOOST_SKIP_PRESETS: dict[str, dict[str, Any]] = {
    "celeba64": {"gamma": 4.0, "skip": 3, "solver": "ancestral", "steps": 250, "spacing": "adm"},
    "imagenet64": {"gamma": 2.5, "skip": 3, "solver": "ancestral", "steps": 250, "spacing": "adm"},
}


@dataclass(frozen=True)
class BoostSkip(Method):
    """Boost-and-Skip hyperparameters; :meth:`start` gives the loop its boosted start (module docstring)."""

    name = "boost-skip"
    summary = ("Boost-and-Skip: initial noise × γ, first Δt grid steps skipped, no guidance (Um, Kim & Ye, ICML "
               "2025). Authors' presets, 250 ancestral steps: CelebA-64 --gamma 4 --skip 3; ImageNet-64 "
               "--gamma 2.5 --skip 3")
    kinds = ("text", "pixel")
    presets: ClassVar[dict[str, dict[str, Any]]] = BOOST_SKIP_PRESETS

    gamma: float = hyperparameter(2.5, "γ: multiply the initial noise z_T by γ (> 0; 1 = no boost)", low=0.0,
                                  low_open=True)
    skip: int = hyperparameter(3, "Δt: skip the first Δt steps of the grid, start the sampler at grid index Δt "
                               "(0 = none; below --steps)", low=0)
    solver: str | None = hyperparameter(None, "sampler: ancestral (DDPM; pixel models) or ddim (default: pixel "
                                        "models ancestral, latent models ddim)", choices=("ancestral", "ddim"))

    def resolved(self, family: str) -> BoostSkip:
        return self.replace(solver=self.solver or ("ancestral" if family == "pixel" else "ddim"))

    def check(self, run: Any) -> None:
        if run.latent and self.solver == "ancestral":
            raise MinorityError("boost-skip on latent text-to-image models runs on DDIM: drop --solver ancestral.")
        if self.skip >= run.steps:
            raise MinorityError(f"skip={self.skip} must be below the number of steps ({run.steps}): lower --skip or "
                                f"raise --steps.")

    def min_steps(self) -> int:
        return int(self.skip) + 1

    def start(self, steps: int) -> tuple[float, int]:
        """(γ, Δt): the loop starts from γ z_T at grid index Δt."""
        if self.skip >= steps:
            raise MinorityError(f"skip={self.skip} must be below the number of steps ({steps}): lower --skip or "
                                f"raise --steps.")
        return float(self.gamma), int(self.skip)
