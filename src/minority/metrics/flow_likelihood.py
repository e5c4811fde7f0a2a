"""Exact likelihood under a flow-matching model (SD3 / FLUX; SPEC §3.5) via its probability-flow ODE.

Diffusers' flows x_σ = (1 − σ) x0 + σ ε (σ from 0, data, to 1, noise) are transported by the velocity field:
``dx/dσ = v(x, σ)``. Along a trajectory the continuity equation gives ``d log p_σ(x(σ))/dσ = −∇·v``, so

    log p_0(x0) = log N(x(1); 0, I) + ∫_0^1 ∇·v(x(σ), σ) dσ.

The divergence is estimated with Hutchinson's estimator uᵀ(∂v/∂x)u (one vector-Jacobian product per probe,
probes fixed along the trajectory, drawn per image from that image's generator as
:func:`minority.metrics.likelihood.draw_probes`), integrated with scipy's RK45 in float64, all images in one
solve. Bits/dim in the latent space: :func:`minority.metrics.likelihood.bits_per_dim`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from minority.core.conditioning import Conditioning
from minority.core.denoiser import FlowDenoiser, flow_scale
from minority.metrics.likelihood import ODELikelihood, draw_probes

VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]  # (x (B, ...), σ) -> v̂ (B, ...)


def flow_log_likelihood(v_fn: VelocityFn, x0: torch.Tensor, generators: Sequence[torch.Generator], probes: int = 1,
                        probe: str = "rademacher", rtol: float = 1e-5, atol: float = 1e-5,
                        sigma_end: float = 1.0) -> ODELikelihood:
    """log p_0(x0) per image ``(B,)`` (nats) of samples ``x0`` ``(B, C, H, W)`` under the flow ``v_fn``.

    Args:
        v_fn: the velocity v̂(x, σ) (differentiable in x).
        generators: one CPU generator per image (the Hutchinson probes).
        probes, probe: Hutchinson probes per image, ``rademacher`` or ``gaussian``.
        sigma_end: where the prior N(0, I) is taken (1: pure noise).
    """
    from scipy.integrate import solve_ivp  # lazy: scipy only for likelihoods

    B, shape = x0.shape[0], tuple(x0.shape[1:])
    D = int(np.prod(shape))
    u = draw_probes(generators, shape, probes, probe)  # (P, B, *shape)
    nfe = 0

    def rhs(sigma: float, state: np.ndarray) -> np.ndarray:
        nonlocal nfe
        nfe += 1
        x = torch.from_numpy(state[: B * D]).view(B, *shape).clone().requires_grad_(True)
        with torch.enable_grad():
            v = v_fn(x, float(sigma)).to(torch.float64)
            divs = []
            for k in range(probes):
                (g,) = torch.autograd.grad(v, x, grad_outputs=u[k], retain_graph=k < probes - 1)
                divs.append((g * u[k]).flatten(1).sum(1))  # uᵀ(∂v/∂x)u per image
        return np.concatenate([v.detach().flatten().numpy(), torch.stack(divs).flatten().numpy()])

    init = np.concatenate([x0.detach().to(torch.float64).flatten().numpy(), np.zeros(probes * B)])
    sol = solve_ivp(rhs, (0.0, float(sigma_end)), init, method="RK45", rtol=rtol, atol=atol)
    end = torch.from_numpy(sol.y[:, -1])
    x1 = end[: B * D].view(B, D)
    per_probe = end[B * D :].view(probes, B)  # ∫ ∇·v dσ per probe
    prior = -0.5 * (x1.pow(2).sum(1) + D * math.log(2 * math.pi))
    delta = per_probe.mean(0)
    return ODELikelihood(prior + delta, prior, delta, per_probe, nfe)


def denoiser_velocity(denoiser: FlowDenoiser, cond: Conditioning) -> VelocityFn:
    """v̂(x, σ) of a flow transformer under ``cond`` (the adapter's raw output at timestep 1000·σ): ``x`` on the CPU
    (the ODE state), the transformer on its own device; returned on the CPU in float64."""

    def v(x: torch.Tensor, sigma: float) -> torch.Tensor:
        z = (x / flow_scale(sigma)).to(device=denoiser.device, dtype=denoiser.dtype)
        return denoiser.raw(z, 1000.0 * sigma, cond).to(device="cpu", dtype=torch.float64)

    return v
