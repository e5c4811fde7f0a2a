"""Exact likelihood of samples under a diffusion model via the probability-flow ODE (Song et al. 2021).

**Continuous time.** A discrete table ``ᾱ_0..ᾱ_{T-1}`` (``scheduler.alphas_cumprod``) is extended to
continuous timesteps ``τ ∈ [0, T-1]`` by *linear interpolation of log ᾱ* between integer timesteps. This is
the VP-SDE ``dx = -½β(τ) x dτ + √β(τ) dw`` with piecewise-constant ``β(τ) = log ᾱ_i - log ᾱ_{i+1}`` on
``[i, i+1)``, whose marginals are exactly ``x_τ = √ᾱ(τ) x_0 + √(1-ᾱ(τ)) ε`` and agree with the discrete
table at every integer τ. The noise predictor is called at fractional timesteps (diffusers UNets accept
float timesteps).

**ODE.** With ``σ(τ) = √(1-ᾱ(τ))`` and score ``-ε̂/σ`` the PF-ODE is
``dx/dτ = f(x, τ) = -½β(τ) (x - ε̂(x, τ)/σ(τ))`` and
``log p_{τ0}(x(τ0)) = log p_{τ1}(x(τ1)) + ∫_{τ0}^{τ1} ∇·f dτ`` with
``∇·f = -½β (D - tr(∂ε̂/∂x)/σ)``. It is integrated with scipy's ``solve_ivp`` (RK45, ``rtol``/``atol``)
from ``t_start`` (default 0: the sample is taken as ``x(0)``, the first table entry, ``ᾱ_0 ≈ 1``) to
``t_end`` (default ``T-1``), in float64, all images of the batch in one solve; the prior at the end is
the standard normal ``N(0, I)``.

**Trace.** ``tr(∂ε̂/∂x)`` is estimated with Hutchinson's estimator ``vᵀ(∂ε̂/∂x)v`` (one vector-Jacobian
product per probe), averaging ``probes`` probes that share one trajectory. Probes are Rademacher (default,
as Song et al.; exact for a diagonal Jacobian) or Gaussian, fixed along the trajectory and drawn per image from that image's
``torch.Generator`` (shape ``(1, C, H, W)`` each, in probe order; SPEC §3.4).

**Bits/dim.** ``bpd = -log p(x) / (D ln 2)`` in the model's space (latents for latent models), plus
``log2(bins / data_range)`` when ``bins`` is given: the discrete-data convention for images quantised to
``bins`` levels over an interval of width ``data_range`` (pixels in [-1, 1] with 256 levels: +7 bits, as
in Song et al.). ``dequantize=True`` adds uniform noise ``U(-½, ½)·data_range/bins`` (drawn from the
per-image generators before the probes) instead of evaluating at the bin centre.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch

from minority.core.denoiser import encode_with_vae, to_eps_x0
from minority.errors import MinorityError

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def continuous_log_alpha_bar(t: torch.Tensor | float, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``log ᾱ(τ)`` by linear interpolation of ``log alphas_cumprod`` at integer τ (float64, shape of ``t``)."""
    log_ab = torch.as_tensor(alphas_cumprod, dtype=torch.float64).log()
    t = torch.as_tensor(t, dtype=torch.float64)
    n = log_ab.shape[0]
    tc = t.clamp(0, n - 1)
    i0 = tc.floor().long().clamp(max=n - 2)
    w = tc - i0.to(torch.float64)
    return (1 - w) * log_ab[i0] + w * log_ab[i0 + 1]


def continuous_alpha_bar(t: torch.Tensor | float, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``ᾱ(τ)`` of the continuous-time extension (float64)."""
    return continuous_log_alpha_bar(t, alphas_cumprod).exp()


def continuous_beta(t: torch.Tensor | float, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``β(τ) = -d log ᾱ / dτ``: ``log ᾱ_i - log ᾱ_{i+1}`` on ``[i, i+1)`` (last segment at ``τ = T-1``)."""
    log_ab = torch.as_tensor(alphas_cumprod, dtype=torch.float64).log()
    t = torch.as_tensor(t, dtype=torch.float64)
    n = log_ab.shape[0]
    i0 = t.clamp(0, n - 1).floor().long().clamp(max=n - 2)
    return log_ab[i0] - log_ab[i0 + 1]


def draw_probes(generators: Sequence[torch.Generator], shape: Sequence[int], probes: int, kind: str) -> torch.Tensor:
    """Hutchinson probes ``(probes, B, *shape)`` float64: for image b, ``probes`` draws of shape ``(1, *shape)``
    from ``generators[b]`` in order (Rademacher ±1 from ``randint``, or standard normal)."""
    out = []
    for g in generators:
        rows = []
        for _ in range(probes):
            if kind == "rademacher":
                rows.append(torch.randint(0, 2, (1, *shape), generator=g, device="cpu").to(torch.float64) * 2 - 1)
            elif kind == "gaussian":
                rows.append(torch.randn((1, *shape), generator=g, device="cpu", dtype=torch.float64))
            else:
                raise MinorityError(f"unknown Hutchinson probe {kind!r}: use 'rademacher' or 'gaussian'")
        out.append(torch.cat(rows, 0))
    return torch.stack(out, 1)


class ODELikelihood(NamedTuple):
    """PF-ODE result per image (float64 ``(B,)`` tensors, nats) and the solver's evaluation count."""

    log_likelihood: torch.Tensor
    prior_log_likelihood: torch.Tensor
    delta_log_likelihood: torch.Tensor
    per_probe_delta: torch.Tensor  # (probes, B)
    nfe: int


def pf_ode_log_likelihood(
    x0: torch.Tensor,
    eps_fn: EpsFn,
    alphas_cumprod: torch.Tensor,
    probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generators: list[torch.Generator] | None = None,
    probe: str = "rademacher",
    t_start: float = 0.0,
    t_end: float | None = None,
    dtype: torch.dtype | None = None,
) -> ODELikelihood:
    """``log p(x0)`` (nats) of each sample under the PF-ODE of ``eps_fn`` (see the module docstring).

    Args:
        x0: samples ``(B, C, H, W)`` in the model's space.
        eps_fn: noise predictor ``eps_fn(x (B, C, H, W), t (B,) float timesteps in [0, T-1]) -> (B, C, H, W)``;
            must be differentiable w.r.t. ``x`` and treat samples independently.
        alphas_cumprod: ``(T,)`` discrete ᾱ table.
        probes: Hutchinson probes per image (averaged; they share one ODE trajectory).
        rtol, atol: ``solve_ivp`` (RK45) tolerances.
        generators: one ``torch.Generator("cpu")`` per image for the probes; default: seeds ``0..B-1``.
        probe: ``"rademacher"``, ``"gaussian"`` or ``"exact"`` (trace from all D basis vectors: exact but D
            vector-Jacobian products per evaluation; for small models and tests).
        t_start, t_end: integration interval in timestep units (default ``0`` to ``T-1``).
        dtype: dtype of the tensors passed to ``eps_fn`` (default: ``x0.dtype``); the ODE state is float64.
    Returns:
        :class:`ODELikelihood` with ``log_likelihood (B,)`` float64.
    """
    # long: the PF-ODE integration (state packing, drift with the Hutchinson divergence, solve, prior term) reads as one derivation
    from scipy.integrate import solve_ivp

    if x0.ndim < 2:
        raise MinorityError(f"likelihood input must be batched (B, C, H, W), got shape {tuple(x0.shape)}")
    if probes < 1:
        raise MinorityError(f"likelihood needs at least 1 Hutchinson probe, got probes={probes}")
    ab = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu()
    if ab.ndim != 1 or ab.shape[0] < 2 or not ((ab > 0) & (ab < 1)).all():
        raise MinorityError("alphas_cumprod must be a 1-D table of values in (0, 1) with at least 2 entries")
    t_end = float(ab.shape[0] - 1) if t_end is None else float(t_end)
    if not 0 <= t_start < t_end <= ab.shape[0] - 1:
        raise MinorityError(f"likelihood interval must satisfy 0 <= t_start < t_end <= {ab.shape[0] - 1}")
    b, shape = x0.shape[0], tuple(x0.shape[1:])
    d = int(np.prod(shape))
    device = x0.device
    dtype = dtype or (x0.dtype if x0.dtype.is_floating_point else torch.float32)
    if generators is None:
        generators = [torch.Generator("cpu").manual_seed(i) for i in range(b)]
    if len(generators) != b:
        raise MinorityError(f"{len(generators)} generators for {b} images: pass one generator per image")
    exact = probe == "exact"
    if exact:  # the trace from all D basis vectors: no randomness, D VJPs per evaluation
        v = torch.eye(d, dtype=dtype, device=device).reshape(d, 1, *shape).expand(d, b, *shape)
    else:
        v = draw_probes(generators, shape, probes, probe).to(device=device, dtype=dtype)  # (P, B, *shape)
    n_vjp = v.shape[0]
    n_est = 1 if exact else probes  # independent trace estimates carried in the ODE state
    nfe = 0

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        nonlocal nfe
        nfe += 1
        x = torch.from_numpy(y[: b * d]).reshape(b, *shape).to(device=device, dtype=dtype).requires_grad_(True)
        beta = float(continuous_beta(t, ab))
        sigma = math.sqrt(-math.expm1(float(continuous_log_alpha_bar(t, ab))))
        tt = torch.full((b,), t, device=device, dtype=dtype)
        with torch.enable_grad():
            eps = eps_fn(x, tt)
            traces = []
            for p in range(n_vjp):
                (vjp,) = torch.autograd.grad(eps, x, grad_outputs=v[p], retain_graph=p < n_vjp - 1)
                traces.append((vjp * v[p]).reshape(b, -1).sum(1))
        tr = torch.stack(traces).detach().to(torch.float64)  # (n_vjp, B)
        if exact:
            tr = tr.sum(0, keepdim=True)
        eps = eps.detach().to(torch.float64)
        xd = x.detach().to(torch.float64)
        drift = -0.5 * beta * (xd - eps / sigma)
        div = -0.5 * beta * (d - tr / sigma)  # (n_est, B)
        return np.concatenate([drift.reshape(-1).cpu().numpy(), div.reshape(-1).cpu().numpy()])

    y0 = np.concatenate([x0.detach().to(torch.float64).reshape(-1).cpu().numpy(), np.zeros(n_est * b)])
    sol = solve_ivp(rhs, (float(t_start), t_end), y0, method="RK45", rtol=rtol, atol=atol)
    if not sol.success:
        raise MinorityError(f"the PF-ODE solver failed ({sol.message}): loosen rtol/atol or check the model")
    yT = torch.from_numpy(sol.y[:, -1])
    xT = yT[: b * d].reshape(b, d)
    delta = yT[b * d :].reshape(n_est, b)
    prior = -0.5 * d * math.log(2 * math.pi) - 0.5 * (xT * xT).sum(1)
    delta_mean = delta.mean(0)
    return ODELikelihood(prior + delta_mean, prior, delta_mean, delta, int(nfe))


def bits_per_dim(log_likelihood: torch.Tensor, dims: int, bins: int | None = None, data_range: float = 2.0) -> torch.Tensor:
    """``-log p / (D ln 2)`` plus ``log2(bins / data_range)`` for data quantised to ``bins`` levels."""
    bpd = -log_likelihood.to(torch.float64) / (dims * math.log(2.0))
    return bpd + math.log2(bins / data_range) if bins else bpd


def pf_ode_bits_per_dim(
    x0: torch.Tensor,
    eps_fn: EpsFn,
    alphas_cumprod: torch.Tensor,
    probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generators: list[torch.Generator] | None = None,
    probe: str = "rademacher",
    bins: int | None = None,
    data_range: float = 2.0,
    dequantize: bool = False,
    t_start: float = 0.0,
    t_end: float | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Bits/dim of each sample ``x0 (B, C, H, W)`` under the PF-ODE of ``eps_fn``: float64 ``(B,)``.

    Same arguments as :func:`pf_ode_log_likelihood`, plus the discretisation convention (module docstring):
    ``bins`` (None = continuous bits/dim of the model's space, e.g. latents; 256 for 8-bit pixels),
    ``data_range`` (width of the data interval, 2 for [-1, 1]) and ``dequantize``.
    """
    if generators is None:
        generators = [torch.Generator("cpu").manual_seed(i) for i in range(x0.shape[0])]
    if dequantize:
        if not bins:
            raise MinorityError("dequantize=True needs bins (the number of quantisation levels, e.g. 256)")
        u = torch.cat([torch.rand((1, *x0.shape[1:]), generator=g, dtype=torch.float64) for g in generators])
        x0 = (x0.to(torch.float64) + (u - 0.5).to(x0.device) * (data_range / bins)).to(x0.dtype)
    res = pf_ode_log_likelihood(x0, eps_fn, alphas_cumprod, probes, rtol, atol, generators, probe, t_start, t_end, dtype)
    return bits_per_dim(res.log_likelihood, int(np.prod(x0.shape[1:])), bins, data_range)


def eps_from_model_output(out: torch.Tensor, x: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """ε̂ of a UNet output for ``prediction_type`` (:func:`minority.core.denoiser.to_eps_x0`); ``alpha_bar (B,)``
    is ᾱ at each sample's (continuous) timestep."""
    a = alpha_bar.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
    return to_eps_x0(out, x, a, prediction_type)[0]


def encode_latents(images: torch.Tensor, vae) -> torch.Tensor:
    """Images ``(B, 3, H, W)`` in [-1, 1] -> scaled VAE latents (:func:`minority.core.denoiser.encode_with_vae`)."""
    return encode_with_vae(vae, images)


def likelihood_for_pipeline(
    images: torch.Tensor,
    unet,
    scheduler,
    vae=None,
    conditioning: dict | Callable[[torch.Tensor, torch.Tensor], dict] | None = None,
    probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generators: list[torch.Generator] | None = None,
    probe: str = "rademacher",
    bins: int | str | None = "auto",
    dequantize: bool = False,
) -> torch.Tensor:
    """Bits/dim of images under a diffusers UNet (pixel or latent model): float64 ``(B,)``.

    Args:
        images: ``(B, C, H, W)`` in [-1, 1] (pixel models: the model's input; latent models: encoded with
            ``vae`` first, see :func:`encode_latents`).
        unet: ``UNet2DModel`` / ``UNet2DConditionModel`` (a learned-variance output's second half is dropped).
        scheduler: carries ``alphas_cumprod`` and ``config.prediction_type``.
        conditioning: extra UNet keyword arguments for the batch (``encoder_hidden_states``,
            ``class_labels``, ``added_cond_kwargs``...), or a callback ``(x, t) -> dict`` returning them.
        bins: ``"auto"`` = 256 for pixel models (+7 bits/dim for [-1, 1]) and None (continuous) with a VAE.
    """
    x = encode_latents(images, vae) if vae is not None else images
    param = next(unet.parameters())
    x = x.to(device=param.device, dtype=param.dtype).detach()
    ab = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float64)
    prediction_type = getattr(scheduler.config, "prediction_type", "epsilon")
    in_ch = x.shape[1]

    def eps_fn(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        kw = conditioning(z, t) if callable(conditioning) else (conditioning or {})
        out = unet(z, t, **kw).sample
        if out.shape[1] == 2 * in_ch:
            out = out[:, :in_ch]
        return eps_from_model_output(out, z, continuous_alpha_bar(t.detach().cpu(), ab).to(z.device), prediction_type)

    if bins == "auto":
        bins = None if vae is not None else 256
    return pf_ode_bits_per_dim(x, eps_fn, ab, probes, rtol, atol, generators, probe, bins=bins, dequantize=dequantize)
