"""CADS: condition-annealed diffusion sampling (Sadat et al. 2024; SPEC §3.3).

At step i of T, τ = 1 − i/T and γ(τ) = 1 for τ ≤ τ1, 0 for τ ≥ τ2, linear in between. The conditional
text embedding y (and the SDXL pooled embedding) is replaced by ŷ = √γ y + s√(1−γ) n, n ~ N(0, I) from the
sample's generator; with ``rescale``, ŷ is matched to y's per-sample mean and std and mixed:
ψ·rescaled(ŷ) + (1−ψ)·ŷ. ŷ is always computed from the clean y of the step (never compounding).
"""

from __future__ import annotations

import torch

from minority.core.conditioning import Conditioning
from minority.core.rng import randn_per_sample
from minority.core.sampling import Hook, StepContext


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


class CADSHook(Hook):
    """Re-noise the conditioning at every step from the clean embedding (SPEC §3.3).

    Args:
        tau1, tau2, noise_scale, psi, rescale: CADS hyperparameters (τ1, τ2, s, ψ, rescale).
        both_branches: also re-noise the unconditional branch (its own noise draw).
    Noise draws per sample and step (when γ < 1): conditional embeds, conditional pooled, then (with
    ``both_branches``) unconditional embeds and pooled.
    """

    def __init__(self, tau1: float = 0.6, tau2: float = 0.9, noise_scale: float = 0.25, psi: float = 1.0,
                 rescale: bool = True, both_branches: bool = False):
        self.tau1, self.tau2, self.noise_scale, self.psi = tau1, tau2, noise_scale, psi
        self.rescale, self.both_branches = rescale, both_branches

    def _noisy(self, c: Conditioning, gamma: float, gens) -> Conditioning:
        out = {}
        for name in ("embeds", "pooled"):
            y = getattr(c, name)
            if y is None:
                continue
            n = randn_per_sample(gens, y.shape[1:], device=y.device).to(y.dtype)
            out[name] = cads_noise(y, gamma, n, self.noise_scale, self.psi, self.rescale)
        return c.replace(**out)

    def before_step(self, ctx: StepContext) -> None:
        tau = 1.0 - ctx.index / ctx.num_steps
        gamma = cads_gamma(tau, self.tau1, self.tau2)
        if gamma >= 1.0:
            return
        ctx.cond = self._noisy(ctx.cond, gamma, ctx.generators)
        if self.both_branches and ctx.uncond is not None:
            ctx.uncond = self._noisy(ctx.uncond, gamma, ctx.generators)
