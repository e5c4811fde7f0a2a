"""The kernel both papers rest on: re-noise a Tweedie estimate to level s, denoise again.

MinorityPrompt's objective (MP Eq. 4, 8) compares ẑ0¹ = ẑ0(z_t) with ẑ0² = ẑ0(z_s, s), z_s = √ᾱ_s ẑ0¹ + √(1−ᾱ_s) ε;
SGMS's minority score (SGMS Eq. 6) is d(x̂0(x_t), sg(x̂0(x_s))) with the same x_s. :func:`reconstruction` is that
second estimate; which of its inputs carry gradients is the caller's choice (stop-gradients differ by paper).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from minority.core.denoiser import renoise
from minority.core.rng import randn_per_sample

X0Fn = Callable[[torch.Tensor, int], torch.Tensor]  # (z_s (B, C, H, W), s) -> ẑ0 (B, C, H, W)


def reconstruction(x0: torch.Tensor, s: int, alpha_s: float, noise: torch.Tensor, x0_at: X0Fn) -> torch.Tensor:
    """ẑ0(z_s, s) with z_s = √ᾱ_s x0 + √(1−ᾱ_s) ε: the re-noised, re-denoised estimate ``(B, C, H, W)``.

    Args:
        x0: the first Tweedie estimate ẑ0 ``(B, C, H, W)`` (detach it for a stop-gradient through z_s).
        s, alpha_s: the re-noising timestep and its ᾱ_s.
        noise: ε ``(B, C, H, W)`` (:func:`renoising_noise`).
        x0_at: the Tweedie estimate at (z_s, s) under the caller's conditioning (and guidance).
    """
    return x0_at(renoise(x0, noise, alpha_s), s)


def renoising_noise(generators: Sequence[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """ε ``(B, ...)`` for :func:`reconstruction`, row k drawn from sample k's generator (SPEC §3.4)."""
    return randn_per_sample(generators, like.shape[1:], device=like.device).to(like.dtype)
