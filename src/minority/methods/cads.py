"""CADS: condition-annealed diffusion sampling (Sadat et al. 2024; SPEC §3.3).

At step i of T, τ = 1 − i/T and γ(τ) = 1 for τ ≤ τ1, 0 for τ ≥ τ2, linear in between. The conditional
text embedding y (and the SDXL pooled embedding) is replaced by ŷ = √γ y + s√(1−γ) n, n ~ N(0, I) from the
sample's generator; with ``rescale``, ŷ is matched to y's per-sample mean and std and mixed:
ψ·rescaled(ŷ) + (1−ψ)·ŷ. ŷ is always computed from the clean y of the step (never compounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from minority.core.conditioning import Conditioning
from minority.core.rng import randn_per_sample
from minority.core.sampling import Hook, StepContext
from minority.errors import MinorityError
from minority.methods.base import Method, hyperparameter


def cads_gamma(tau: float, tau1: float, tau2: float) -> float:
    """γ(τ): 1 for τ ≤ τ1, 0 for τ ≥ τ2, linear in between."""
    if tau <= tau1:
        return 1.0
    if tau >= tau2:
        return 0.0
    return (tau2 - tau) / (tau2 - tau1)


def cads_noise(
    y: torch.Tensor, gamma: float, noise: torch.Tensor, noise_scale: float, psi: float, rescale: bool
) -> torch.Tensor:
    """ŷ = √γ y + s√(1−γ) n, optionally rescaled to y's per-sample mean/std and mixed with weight ψ.

    Args:
        y: clean embedding ``(B, ...)``; noise: ``n`` of the same shape.
    """
    y_hat = gamma**0.5 * y + noise_scale * (1.0 - gamma) ** 0.5 * noise
    if not rescale:
        return y_hat
    dims = tuple(range(1, y.ndim))
    mu, sd = y.mean(dim=dims, keepdim=True), y.std(dim=dims, keepdim=True)
    mu_h, sd_h = y_hat.mean(dim=dims, keepdim=True), y_hat.std(dim=dims, keepdim=True)
    y_res = (y_hat - mu_h) / sd_h * sd + mu
    return psi * y_res + (1.0 - psi) * y_hat


@dataclass(frozen=True)
class CADS(Method, Hook):
    """CADS; stateless, so the method is its own per-step hook.

    Noise draws per sample and step (when γ < 1): conditional embeds, conditional pooled, then (with
    ``both_branches``) unconditional embeds and pooled.
    """

    name = "cads"
    summary = "condition-annealed sampling: noised text embedding early on (Sadat et al.)"

    tau1: float = hyperparameter(0.6, "CADS τ1: below this τ = 1 − i/T the conditioning is clean (γ = 1)",
                                 low=0.0, high=1.0)
    tau2: float = hyperparameter(0.9, "CADS τ2: above this τ the conditioning is fully noised (γ = 0)",
                                 low=0.0, high=1.0)
    noise_scale: float = hyperparameter(0.25, "CADS s: noise scale added to the text embedding", low=0.0)
    psi: float = hyperparameter(1.0, "CADS ψ: mix of the rescaled (ψ) and raw (1−ψ) noised embedding",
                                low=0.0, high=1.0)
    rescale: bool = hyperparameter(True, "CADS: rescale the noised embedding to the clean one's mean and std")
    both_branches: bool = hyperparameter(False, "CADS: also noise the unconditional (negative-prompt) embedding")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tau1 > self.tau2:
            raise MinorityError(f"CADS needs 0 <= tau1 <= tau2 <= 1 (got tau1={self.tau1}, tau2={self.tau2}).")

    def hooks(self, run: Any) -> list[Hook]:
        return [self]

    def before_step(self, ctx: StepContext) -> None:
        gamma = cads_gamma(1.0 - ctx.index / ctx.num_steps, self.tau1, self.tau2)  # γ(τ), τ = 1 − i/T
        if gamma >= 1.0:
            return
        ctx.cond = self._noisy(ctx.cond, gamma, ctx.generators)  # ŷ from the clean y of this step
        if self.both_branches and ctx.uncond is not None:
            ctx.uncond = self._noisy(ctx.uncond, gamma, ctx.generators)

    def _noisy(self, c: Conditioning, gamma: float, gens) -> Conditioning:
        out = {}
        for name in ("embeds", "pooled"):
            y = getattr(c, name)
            if y is None:
                continue
            n = randn_per_sample(gens, y.shape[1:], device=y.device).to(y.dtype)
            out[name] = cads_noise(y, gamma, n, self.noise_scale, self.psi, self.rescale)
        return c.replace(**out)
