"""The one sampling loop.

``sample`` walks explicit (t, t_next) pairs. At each step it builds a :class:`StepContext`, lets the
method's hooks act on it (a hook may replace the sample z, the conditioning, or supply predictions it already
computed), evaluates the denoiser once — conditional and unconditional branches batched into a single UNet
call, and no unconditional call at all when it is not needed — applies the solver, and lets the hooks
replace the result:

* ``ddim`` (η = 0):   ε̃ = ε_∅ + w(ε_c − ε_∅);  ẑ0 = (z_t − √(1−ᾱ_t) ε̃)/√ᾱ_t;  z_next = √ᾱ_next ẑ0 + √(1−ᾱ_next) ε̃
* ``cfgpp`` (CFG++):   ε_λ = ε_∅ + λ(ε_c − ε_∅);  ẑ0 from ε_λ;  z_next = √ᾱ_next ẑ0 + √(1−ᾱ_next) ε_∅
* ``ancestral`` (DDPM): posterior mean μ̃(z_t, ẑ0) + σ_t·n, n from the per-image generators.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from minority.core.conditioning import Conditioning
from minority.core.denoiser import Denoiser, Prediction
from minority.core.rng import randn_per_sample
from minority.errors import MinorityError


@dataclass
class StepContext:
    """Mutable state of one sampling step, shared with the hooks.

    Attributes:
        index, num_steps: step i (0-based) of T sampling steps.
        t, t_next: integer timesteps (``t_next = -1`` after the last step); ``alpha``/``alpha_next`` their ᾱ.
        z: current sample z_t ``(B, C, h, w)``; a hook may replace it (the solver then updates the new z).
        cond, uncond: conditional / unconditional conditioning (``uncond`` is None when unused).
        wants_uncond: whether the solver uses the unconditional branch at this step.
        guidance: CFG scale w (λ for CFG++).
        generators: one CPU generator per sample (SPEC §3.4).
        denoiser: the model adapter.
        pred_cond, pred_uncond: predictions a hook already computed (used by the solver instead of a new
            UNet call, also when the hook then moved ``z``).
        record: per-step values to report (e.g. the objective J), collected by :func:`sample`.
        clip_sample: clamp ẑ0 to [−c, c] inside the solver update (pixel schedulers' ``clip_sample``).
        variance_type: the DDPM scheduler's ``variance_type`` (ancestral sampler).
        eps_from_x0: DDIM's direction term uses ε re-derived from the clipped ẑ0, ε = (z − √ᾱ·ẑ0)/√(1 − ᾱ)
            (guided-diffusion's ``ddim_sample``), instead of the model's ε̂ (diffusers' ``DDIMScheduler``).
    """

    index: int
    num_steps: int
    t: int
    t_next: int
    alpha: float
    alpha_next: float
    z: torch.Tensor
    cond: Conditioning
    uncond: Conditioning | None
    guidance: float
    generators: Sequence[torch.Generator]
    denoiser: Denoiser
    wants_uncond: bool = False
    pred_cond: Prediction | None = None
    pred_uncond: Prediction | None = None
    record: dict = field(default_factory=dict)
    clip_sample: float | None = None
    variance_type: str = "fixed_small"
    eps_from_x0: bool = False


class Hook:
    """A per-step intervention. Subclasses override :meth:`before_step` and/or :meth:`after_step`."""

    def before_step(self, ctx: StepContext) -> None:
        """Called before the denoiser evaluation of step ``ctx.index``."""

    def after_step(self, ctx: StepContext, z_next: torch.Tensor) -> torch.Tensor | None:
        """Called after the solver produced ``z_next``; may return a replacement for it."""


def tweedie(z: torch.Tensor, eps: torch.Tensor, alpha: float) -> torch.Tensor:
    """ẑ0 = (z − √(1−ᾱ) ε)/√ᾱ."""
    return (z - (1.0 - alpha) ** 0.5 * eps) / alpha**0.5


def cfg_eps(pred_cond: Prediction, pred_uncond: Prediction | None, w: float) -> torch.Tensor:
    """ε̃ = w ε_c + (1 − w) ε_∅ (MP Eq. 2); ε_c when there is no unconditional branch."""
    if pred_uncond is None:
        return pred_cond.eps
    return pred_uncond.eps + w * (pred_cond.eps - pred_uncond.eps)


def _clip(x0: torch.Tensor, ctx: StepContext) -> torch.Tensor:
    return x0 if ctx.clip_sample is None else x0.clamp(-ctx.clip_sample, ctx.clip_sample)


def ddim_step(ctx: StepContext, pc: Prediction, pu: Prediction | None) -> torch.Tensor:
    """Deterministic DDIM (η = 0) with classifier-free guidance (ẑ0 clipped as diffusers' ``clip_sample``; with
    ``ctx.eps_from_x0`` the direction term uses the ε of the clipped ẑ0, as guided-diffusion)."""
    eps = cfg_eps(pc, pu, ctx.guidance)
    x0 = _clip(ctx.denoiser.guided_x0(ctx.z, ctx.t, eps, pc, pu, ctx.guidance), ctx)
    if ctx.eps_from_x0 and ctx.clip_sample is not None:
        eps = (ctx.z - ctx.alpha**0.5 * x0) / (1.0 - ctx.alpha) ** 0.5
    return ctx.alpha_next**0.5 * x0 + (1.0 - ctx.alpha_next) ** 0.5 * eps


def posterior_variance(ctx: StepContext, pred: Prediction | None = None) -> torch.Tensor | float:
    """Σ_t of the DDPM posterior q(z_next | z_t, ẑ0) for the step (t → t_next), as diffusers' DDPMScheduler:
    ``fixed_small`` β̃ = (1−ᾱ_next)/(1−ᾱ_t)·β_t (β_t = 1 − ᾱ_t/ᾱ_next), ``fixed_large`` β_t, ``learned_range``
    exp(frac·log β_t + (1−frac)·log β̃) with frac = (v + 1)/2 from the model's variance output."""
    a, an = ctx.alpha, ctx.alpha_next
    beta = 1.0 - a / an
    tilde = max((1.0 - an) / (1.0 - a) * beta, 1e-20)
    vt = ctx.variance_type
    if vt in ("learned_range", "learned") and pred is not None and pred.var_values is not None:
        if vt == "learned":
            return pred.var_values.exp()
        frac = (pred.var_values + 1) / 2
        return torch.exp(frac * torch.log(torch.tensor(beta)) + (1 - frac) * torch.log(torch.tensor(tilde)))
    if vt == "fixed_large":
        return beta
    return tilde


def ancestral_step(ctx: StepContext, pc: Prediction, pu: Prediction | None) -> torch.Tensor:
    """DDPM ancestral step (diffusers' ``DDPMScheduler.step``): posterior mean of (z_t, ẑ0) plus √Σ_t·n with n
    drawn per sample (no noise on the last step)."""
    eps = cfg_eps(pc, pu, ctx.guidance)
    a, an = ctx.alpha, ctx.alpha_next
    beta = 1.0 - a / an
    x0 = _clip(tweedie(ctx.z, eps, a), ctx)
    mean = (an**0.5 * beta / (1.0 - a)) * x0 + ((a / an) ** 0.5 * (1.0 - an) / (1.0 - a)) * ctx.z
    if ctx.t <= 0:  # as diffusers: no noise at t = 0
        return mean
    var = posterior_variance(ctx, pc)
    std = var.sqrt() if isinstance(var, torch.Tensor) else var**0.5
    return mean + std * per_sample_noise(ctx.generators, ctx.z)


def cfgpp_step(ctx: StepContext, pc: Prediction, pu: Prediction | None) -> torch.Tensor:
    """CFG++ (Chung et al. 2024): denoise with the λ-guided ε, re-noise with the unconditional ε_∅."""
    eps = cfg_eps(pc, pu, ctx.guidance)
    x0 = _clip(ctx.denoiser.guided_x0(ctx.z, ctx.t, eps, pc, pu, ctx.guidance), ctx)
    return ctx.alpha_next**0.5 * x0 + (1.0 - ctx.alpha_next) ** 0.5 * pu.eps


SOLVERS: dict[str, Callable[[StepContext, Prediction, Prediction | None], torch.Tensor]] = {
    "ddim": ddim_step,
    "cfgpp": cfgpp_step,
    "ancestral": ancestral_step,
}


def needs_uncond(solver: str, guidance: float) -> bool:
    """Whether the unconditional branch must be evaluated (never for DDIM/ancestral at w = 1)."""
    return solver == "cfgpp" or float(guidance) != 1.0


def predict(ctx: StepContext) -> tuple[Prediction, Prediction | None]:
    """Conditional and (if needed) unconditional predictions, batched into one UNet call.

    Predictions already supplied by a hook are reused; inputs are detached and no graph is built.
    """
    den, z = ctx.denoiser, ctx.z.detach()
    want_u = ctx.wants_uncond
    pc, pu = ctx.pred_cond, ctx.pred_uncond if want_u else None
    with torch.no_grad():
        if pc is None and want_u and pu is None:
            return den.both(z, ctx.t, ctx.cond.detach(), ctx.uncond.detach())
        if pc is None:
            pc = den(z, ctx.t, ctx.cond.detach())
        if want_u and pu is None:
            pu = den(z, ctx.t, ctx.uncond.detach())
    return _detached(pc), _detached(pu)


def _detached(p: Prediction | None) -> Prediction | None:
    return None if p is None else p.detach()


def sample(
    denoiser: Denoiser,
    z: torch.Tensor,
    cond: Conditioning,
    uncond: Conditioning | None,
    pairs: Sequence[tuple[int, int]],
    guidance: float,
    generators: Sequence[torch.Generator],
    solver: str | Callable = "ddim",
    hooks: Sequence[Hook] = (),
    progress: Callable[[int], None] | None = None,
    clip_sample: float | None = None,
    variance_type: str = "fixed_small",
    start: int = 0,
    eps_from_x0: bool = False,
) -> tuple[torch.Tensor, list[dict]]:
    """Run the sampler from z_T to z_0 (or from grid index ``start``: z is then the sample at t_start).

    Args:
        denoiser: model adapter.
        z: initial sample z_T ``(B, C, h, w)``.
        cond, uncond: conditioning of the two CFG branches (``uncond`` may be None at w = 1).
        pairs: ``[(t, t_next), ...]`` from :func:`minority.core.schedules.timestep_pairs`.
        guidance: w (CFG) or λ (CFG++).
        generators: one CPU generator per sample.
        solver: ``"ddim"``, ``"cfgpp"`` or a callable ``(ctx, pred_cond, pred_uncond) -> z_next``.
        hooks: per-step interventions, called in order.
        progress: called with the step index after each step.
        clip_sample, variance_type: clamp ẑ0 to [−c, c] (None = no clipping); the ancestral posterior variance.
        start: first grid index to run (Boost-and-Skip's Δt): steps 0 … start−1 are skipped, ``z`` is taken as
            the sample at ``pairs[start][0]``; step indices (``ctx.index``) stay those of the full grid.
        eps_from_x0: DDIM in guided-diffusion's form (ε from the clipped ẑ0; only with ``clip_sample``).
    Returns:
        ``(z_0 (B, C, h, w), records)``: ``records[i]`` holds what hooks reported at step i (empty if skipped).
    """
    step_fn = SOLVERS[solver] if isinstance(solver, str) else solver
    solver_name = solver if isinstance(solver, str) else getattr(solver, "name", "ddim")
    if not 0 <= int(start) < len(pairs):
        raise MinorityError(f"start={start} must be a grid index in 0..{len(pairs) - 1}: skip fewer steps.")
    records: list[dict] = [{} for _ in range(int(start))]
    z = z.detach()
    for i, (t, t_next) in enumerate(pairs[int(start):], start=int(start)):
        ctx = StepContext(
            index=i, num_steps=len(pairs), t=t, t_next=t_next, alpha=denoiser.alpha(t),
            alpha_next=denoiser.alpha(t_next), z=z, cond=cond, uncond=uncond, guidance=float(guidance),
            generators=generators, denoiser=denoiser, clip_sample=clip_sample, variance_type=variance_type,
            eps_from_x0=eps_from_x0, wants_uncond=uncond is not None and needs_uncond(solver_name, guidance),
        )
        for h in hooks:
            h.before_step(ctx)
        pc, pu = predict(ctx)
        with torch.no_grad():
            z_next = step_fn(ctx, pc, pu)
        for h in hooks:
            z_next = _replaced(h.after_step(ctx, z_next), z_next)
        records.append(ctx.record)
        z = z_next.detach()
        if progress is not None:
            progress(i)
    return z, records


def _replaced(new: torch.Tensor | None, old: torch.Tensor) -> torch.Tensor:
    return old if new is None else new


def per_sample_noise(generators: Sequence[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like ``like`` ``(B, ...)``, row k drawn from generator k."""
    return randn_per_sample(generators, like.shape[1:], device=like.device, dtype=torch.float32).to(like.dtype)
