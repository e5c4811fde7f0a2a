"""The base samplers and the guidance-only baselines (SPEC §3.3): DDIM, DDPM ancestral, null-prompt, CFG++.

They have no hyperparameters of their own: each is the one loop with a solver (and a default negative prompt
or guidance). The solvers themselves are in :mod:`minority.core.sampling`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from minority.errors import MinorityError
from minority.methods.base import Method


@dataclass(frozen=True)
class DDIM(Method):
    """Deterministic DDIM (η = 0) with classifier-free guidance ε̃ = ε_∅ + w(ε_c − ε_∅) (MP Eq. 2)."""

    name = "ddim"
    summary = "deterministic DDIM (η = 0) with classifier-free guidance"
    kinds = ("text", "pixel")


@dataclass(frozen=True)
class Ancestral(Method):
    """DDPM ancestral sampling: posterior mean μ̃(z_t, ẑ0) plus √Σ_t·n (= diffusers' ``DDPMPipeline``)."""

    name = "ancestral"
    summary = "DDPM ancestral sampling (pixel-space models), as diffusers' DDPMPipeline"
    kinds = ("pixel",)
    default_solver = "ancestral"


@dataclass(frozen=True)
class NullPrompt(Method):
    """DDIM whose unconditional branch is the prompt "commonly-looking" (MP §4.1)."""

    name = "null-prompt"
    summary = "DDIM with the negative prompt \"commonly-looking\" (MP §4.1)"
    default_negative_prompt = "commonly-looking"


@dataclass(frozen=True)
class CFGPP(Method):
    """CFG++ (Chung et al. 2024): ẑ0 from ε_λ = ε_∅ + λ(ε_c − ε_∅), re-noised with ε_∅; λ ∈ [0, 1]."""

    name = "cfgpp"
    summary = "CFG++: denoise with λ-guided ε, re-noise with ε_∅ (Chung et al.)"
    default_solver = "cfgpp"
    default_guidance = 0.6

    def check(self, run: Any) -> None:
        if not 0.0 <= run.guidance <= 1.0:
            raise MinorityError(f"cfgpp takes --guidance λ in [0, 1] (got {run.guidance}); 0.6 is a good default.")
