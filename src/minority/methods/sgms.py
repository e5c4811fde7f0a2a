"""SGMS: self-guided minority sampling (Um & Ye, ECCV 2024; SPEC §3.2), and the minority score it builds on.

Minority metric at step t (the reconstruction loss of the Tweedie estimate, SGMS Eq. 6):
    L(x_t) = E_ε d( x̂0(x_t), sg( x̂0(x_s) ) ),   x_s = √ᾱ_p x̂0(x_t) + √(1−ᾱ_p) ε,  p = perturb·T_train

The stop-gradient covers the whole reconstruction branch; the expectation uses ``mc_samples`` draws from the
sample's generator. The guidance ĝ = ∇_{x_t} L, normalised per sample (``linf``: g / max|g|; ``l2``;
``none``), times ``scale``, times the DDPM posterior variance Σ_t for ``schedule="var"``:

* ancestral (DDPM) sampler: added to the posterior mean (the authors' form);
* DDIM: added to x_t before the step, with the ε̂(x_t) of the gradient pass reused by the update.

The UNet forward that carries the gradient is reused by the sampling step (never repeated).
:func:`minority_score` is the same reconstruction loss on real images (Um & Ye 2023), to rank a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from minority.core.conditioning import Conditioning
from minority.core.denoiser import Denoiser
from minority.core.distances import (  # noqa: F401  (l2_distance, get_distance: re-exported for callers)
    Distance,
    check_distance,
    get_distance,
    l2_distance,
)
from minority.core.kernel import reconstruction, renoising_noise
from minority.core.sampling import Hook, StepContext, posterior_variance
from minority.errors import MinorityError
from minority.methods.base import Method, hyperparameter


def reconstruction_loss(denoiser: Denoiser, x0: torch.Tensor, p: int, cond: Conditioning, distance: Distance,
                        generators: list, mc_samples: int = 1) -> torch.Tensor:
    """E_ε d(x0, sg(x̂0(√ᾱ_p x0 + √(1−ᾱ_p) ε))) per sample ``(B,)``; differentiable w.r.t. ``x0`` only through
    its first argument (the reconstruction branch is under no_grad). Draws ``mc_samples`` noises per sample."""
    a = denoiser.alpha(p)
    total = 0.0
    for _ in range(mc_samples):
        eps = renoising_noise(generators, x0)
        with torch.no_grad():
            rec = reconstruction(x0.detach(), p, a, eps, lambda z, s: denoiser(z, s, cond.detach()).x0)
        total = total + distance(x0, rec)
    return total / mc_samples


def normalise(g: torch.Tensor, how: str) -> torch.Tensor:
    """Per-sample gradient normalisation: ``linf`` g/max|g|, ``l2`` g/‖g‖, ``none``."""
    if how == "none":
        return g
    flat = g.flatten(1)
    n = flat.abs().amax(1) if how == "linf" else flat.norm(dim=1)
    return g / n.clamp_min(1e-20).view(-1, *[1] * (g.ndim - 1))


#: The paper's settings (authors' README; guided-diffusion checkpoints, 250 respaced ancestral steps with
#: ``spacing="adm"``, p_ratio 0.8, ``var`` schedule). ``steps``/``spacing`` are run settings, the rest fields.
SGMS_PRESETS: dict[str, dict[str, Any]] = {
    "celeba64": {"scale": 0.4, "guide_every": 5, "perturb": 0.8, "schedule": "var", "steps": 250, "spacing": "adm"},
    "imagenet64": {"scale": 0.2, "guide_every": 2, "perturb": 0.8, "schedule": "var", "steps": 250, "spacing": "adm"},
}


@dataclass(frozen=True)
class SGMS(Method):
    """SGMS hyperparameters (SPEC §2); :meth:`hooks` gives the per-step guidance :class:`SGMSHook`."""

    name = "sgms"
    summary = "SGMS: guidance towards a high reconstruction loss of the Tweedie estimate (Um & Ye, ECCV 2024)"
    kinds = ("text", "pixel")
    presets: ClassVar[dict[str, dict[str, Any]]] = SGMS_PRESETS

    scale: float = hyperparameter(1.0, "SGMS w: guidance strength (0 = the base sampler)", low=0.0)
    perturb: float = hyperparameter(0.8, "p: re-noise the Tweedie estimate to timestep p·T_train, p in (0, 1)",
                                    low=0.0, high=1.0, low_open=True, high_open=True)
    guide_every: int = hyperparameter(5, "N: guide step i of S when (S-1-i) % N == 0 (counted from the end, as the "
                                      "authors' t % inter_rate == 0: the last step is always guided)", low=1)
    schedule: str = hyperparameter("var", "var: × posterior variance; fixed; switch-off: fixed until "
                                   "t <= switch_off_at·T", choices=("var", "fixed", "switch-off"))
    switch_off_at: float = hyperparameter(0.0, "with schedule switch-off: stop guiding once t <= switch_off_at·T_train",
                                          low=0.0, high=1.0, high_open=True)
    distance: str | None = hyperparameter(None, "d: enet-lpips (offline LPIPS substitute), lpips (real weights), l2, "
                                          "l1 (default: pixel models enet-lpips, latent models l2)",
                                          choices=("enet-lpips", "lpips", "l2", "l1"))
    mc_samples: int = hyperparameter(1, "Monte-Carlo draws of the re-noising ε", low=1)
    normalize: str = hyperparameter("linf", "per-sample gradient normalisation", choices=("linf", "l2", "none"))
    solver: str | None = hyperparameter(None, "sampler the guidance drives: ancestral (DDPM, the authors' form; pixel "
                                        "models) or ddim (default: pixel models ancestral, latent models ddim)",
                                        choices=("ancestral", "ddim"))

    def resolved(self, family: str) -> SGMS:
        """The distance and the solver filled in: pixel models enet-lpips / ancestral, latent models l2 / ddim."""
        pixel = family == "pixel"
        return self.replace(distance=self.distance or ("enet-lpips" if pixel else "l2"),
                            solver=self.solver or ("ancestral" if pixel else "ddim"))

    def check(self, run: Any) -> None:
        if run.latent and self.solver == "ancestral":
            raise MinorityError("sgms on latent text-to-image models runs on DDIM: drop --solver ancestral.")
        check_distance(self.distance or ("l2" if run.latent else "enet-lpips"), run.latent)
        if self.schedule == "var" and not hasattr(run.scheduler, "alphas_cumprod") and not hasattr(run.scheduler, "sigmas"):
            raise MinorityError(
                f"schedule 'var' needs a DDPM-type noise schedule (ᾱ_t) to compute the posterior variance, and "
                f"{type(run.scheduler).__name__} has none: use --schedule fixed."
            )

    def hooks(self, run: Any) -> list[Hook]:
        m = self.resolved(run.family)
        respaced = getattr(run, "spacing", "scheduler") == "adm"
        return [SGMSHook(m, get_distance(m.distance, run.latent), perturb_timestep(m.perturb, run), respaced)]


def perturb_timestep(perturb: float, run: Any) -> int | None:
    """p in timesteps: on guided-diffusion's respaced grid (``spacing="adm"``) the authors' respaced index
    ⌊S·perturb⌋ mapped to its timestep (their ``int(num_timesteps * p_ratio)``); else None (p·T_train)."""
    if getattr(run, "spacing", "scheduler") != "adm":
        return None
    kept = sorted(t for t, _ in run.pairs)
    return kept[min(int(len(kept) * perturb), len(kept) - 1)]


def guided_index(i: int, num_steps: int, guide_every: int) -> bool:
    """Whether step ``i`` of ``num_steps`` (0-based, noise → data) is a guided one: (S − 1 − i) % N == 0."""
    return (num_steps - 1 - i) % guide_every == 0


class SGMSHook(Hook):
    """Per-step SGMS guidance (SGMS Alg. 1; module docstring). ``method`` must be resolved (distance, solver)."""

    def __init__(self, method: SGMS, distance: Distance, p: int | None = None, respaced: bool = False):
        self.m, self.distance, self.p, self.respaced = method, distance, p, respaced
        self.guided_steps: list[int] = []
        self.backward_passes = 0
        self._pending: torch.Tensor | None = None  # ancestral: the displacement added to the posterior mean

    def guided_at(self, ctx: StepContext) -> bool:
        """Whether step ``ctx.index`` is guided (scale 0 guides nothing: exactly the base sampler, no extra draws).

        Step i of S (0-based from noise to data) is guided when (S − 1 − i) % N == 0 — the authors' respaced
        index t = S − 1 − i counting down with t % inter_rate == 0 (SPEC §3.2), so the last step always is."""
        m = self.m
        if m.scale == 0 or not guided_index(ctx.index, ctx.num_steps, m.guide_every):
            return False
        if m.schedule != "switch-off":
            return True
        if self.respaced:  # the authors' respaced index S − 1 − i > t_mid · S
            return ctx.num_steps - 1 - ctx.index > m.switch_off_at * ctx.num_steps
        return ctx.t > m.switch_off_at * ctx.denoiser.num_train_timesteps

    def before_step(self, ctx: StepContext) -> None:
        self._pending = None
        if not self.guided_at(ctx):
            return
        m, den = self.m, ctx.denoiser
        p = self.p if self.p is not None else den.level(m.perturb)
        with torch.enable_grad():
            x = ctx.z.detach().requires_grad_(True)
            pred = den(x, ctx.t, ctx.cond)  # x̂0(x_t): the forward with gradient, reused by the sampler
            L = reconstruction_loss(den, pred.x0, p, ctx.cond, self.distance, ctx.generators, m.mc_samples)  # Eq. 6
            (g,) = torch.autograd.grad(L.sum(), x)  # ∇_{x_t} L
        self.backward_passes += 1
        self.guided_steps.append(ctx.index)
        ctx.record["L"] = [float(v) for v in L.detach()]
        ctx.pred_cond = pred.detach()
        shift = m.scale * normalise(g, m.normalize)  # w · ĝ
        if m.schedule == "var":
            shift = shift * posterior_variance(ctx, ctx.pred_cond)  # × Σ_t
        if m.solver == "ancestral":
            self._pending = shift  # added to the posterior mean: after the solver's step
            return
        if ctx.wants_uncond:  # DDIM: ε̂(x_t) of both branches at the unguided x_t, then the update from x_t + ĝ
            with torch.no_grad():
                ctx.pred_uncond = den(ctx.z.detach(), ctx.t, ctx.uncond.detach()).detach()
        ctx.z = ctx.z + shift

    def after_step(self, ctx: StepContext, z_next: torch.Tensor) -> torch.Tensor | None:
        return None if self._pending is None else z_next + self._pending


def minority_score(denoiser: Denoiser, images: torch.Tensor, cond: Conditioning, generators: list,
                   perturb: float = 0.8, distance: Distance = l2_distance, mc_samples: int = 1) -> torch.Tensor:
    """Minority score of real samples (Um & Ye 2023): E_ε d(x0, x̂0(x_p)) with p = perturb·T, ``(B,)``.

    Args:
        images: clean samples x0 in the model's space ``(B, C, H, W)`` (pixels in [−1, 1], or VAE latents).
        cond: their conditioning (class labels / text) or an unconditional one.
    """
    p = denoiser.level(perturb)
    with torch.no_grad():
        return reconstruction_loss(denoiser, images, p, cond, distance, generators, mc_samples)
