"""The denoiser adapter: every parametrisation conversion and the VAE, in one place.

A diffusion network predicts ε (``epsilon``), v (``v_prediction``) or x0 (``sample``). With ᾱ the noise level
of z = √ᾱ x0 + √(1−ᾱ) ε:

* ε-prediction:  ẑ0 = (z − √(1−ᾱ) ε̂)/√ᾱ  (Tweedie's formula)
* v-prediction:  ẑ0 = √ᾱ z − √(1−ᾱ) v̂,  ε̂ = √ᾱ v̂ + √(1−ᾱ) z
* x0-prediction: ε̂ = (z − √ᾱ ẑ0)/√(1−ᾱ)

:func:`to_eps_x0` and :func:`training_target` are the only implementations of these maps; the samplers, the
likelihood (PF-ODE) and the training losses all call them. :func:`renoise` (z_s = √ᾱ_s x0 + √(1−ᾱ_s) ε) and
:func:`clamp_level` (a fraction p of T_train as an integer timestep) are the other two shared pieces.
:class:`Denoiser` wraps a UNet (and the VAE of latent models): ``denoiser(z, t, cond) -> Prediction``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minority.core.conditioning import Conditioning
from minority.core.schedules import annealed_perturb_timestep
from minority.errors import MinorityError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
Alpha = float | torch.Tensor  # ᾱ: a Python float, or a tensor broadcastable to z (per-sample levels)


def _roots(alpha: Alpha) -> tuple[Alpha, Alpha]:
    """(√ᾱ, √(1−ᾱ)) for a float or a tensor ᾱ."""
    if isinstance(alpha, torch.Tensor):
        return alpha.sqrt(), (1 - alpha).sqrt()
    return alpha**0.5, (1.0 - alpha) ** 0.5


def check_prediction_type(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise MinorityError(f"Unsupported prediction_type {prediction_type!r}: expected epsilon, v_prediction or sample.")
    return prediction_type


def to_eps_x0(out: torch.Tensor, z: torch.Tensor, alpha: Alpha, prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε̂, ẑ0) from a network output ``out`` ``(B, C, H, W)`` at noisy ``z`` of level ᾱ (module docstring)."""
    sa, s1a = _roots(alpha)
    if prediction_type == "epsilon":
        return out, (z - s1a * out) / sa
    if prediction_type == "v_prediction":
        return sa * out + s1a * z, sa * z - s1a * out
    if prediction_type == "sample":
        return (z - sa * out) / s1a, out
    raise MinorityError(f"Unsupported prediction_type {prediction_type!r}: expected epsilon, v_prediction or sample.")


def training_target(x0: torch.Tensor, eps: torch.Tensor, alpha: Alpha, prediction_type: str) -> torch.Tensor:
    """What the network is trained to output for z = √ᾱ x0 + √(1−ᾱ) ε: ε, v = √ᾱ ε − √(1−ᾱ) x0, or x0."""
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        sa, s1a = _roots(alpha)
        return sa * eps - s1a * x0
    if prediction_type == "sample":
        return x0
    raise MinorityError(f"Unsupported prediction_type {prediction_type!r}: expected epsilon, v_prediction or sample.")


def renoise(x0: torch.Tensor, eps: torch.Tensor, alpha: Alpha) -> torch.Tensor:
    """z_s = √ᾱ_s x0 + √(1−ᾱ_s) ε: the forward process q(z_s | x0) with the given noise."""
    sa, s1a = _roots(alpha)
    return sa * x0 + s1a * eps


def clamp_level(fraction: float, num_train_timesteps: int) -> int:
    """The integer timestep round(p·T_train), clamped to [1, T_train − 1] (SGMS's and MinorityPrompt's p)."""
    return min(max(round(float(fraction) * num_train_timesteps), 1), num_train_timesteps - 1)


@dataclass
class Prediction:
    """Denoiser output for a batch: noise estimate ε̂ and Tweedie estimate ẑ0, both ``(B, C, H, W)``;
    ``var_values`` ``(B, C, H, W)`` for learned-variance models (else ``None``)."""

    eps: torch.Tensor
    x0: torch.Tensor
    var_values: torch.Tensor | None = None

    def detach(self) -> Prediction:
        return Prediction(self.eps.detach(), self.x0.detach(),
                          None if self.var_values is None else self.var_values.detach())


class Denoiser:
    """Uniform interface over a diffusers UNet: ``denoiser(z, t, cond) -> Prediction``.

    Args:
        unet: ``UNet2DConditionModel`` (text) or ``UNet2DModel`` (pixel).
        alphas_cumprod: ᾱ table ``(T_train,)`` of the scheduler (used as float64).
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.
        final_alpha_cumprod: ᾱ used for the step after the last timestep (t_next = -1).
        vae: ``AutoencoderKL`` of latent models (:meth:`encode` / :meth:`decode`), None for pixel models.
        concat_channels: input channels the network takes beyond the sample's (``Conditioning.concat``, e.g. 3
            for the 64→256 upsampler, whose ``in_channels`` is 6 for a 3-channel sample).
    """

    def __init__(self, unet, alphas_cumprod: torch.Tensor, prediction_type: str, final_alpha_cumprod: float = 1.0,
                 vae=None, concat_channels: int = 0):
        self.unet = unet
        self.vae = vae
        self.alphas_cumprod = alphas_cumprod.detach().to("cpu", torch.float64)
        self.prediction_type = check_prediction_type(prediction_type)
        self.final_alpha_cumprod = float(final_alpha_cumprod)
        self.num_train_timesteps = len(self.alphas_cumprod)
        self.calls = 0  # number of UNet forward calls (batched CFG counts once)
        self.samples_evaluated = 0  # number of per-sample evaluations (CFG counts 2 per image)
        cfg = getattr(unet, "config", None)
        self.concat_channels = int(concat_channels)
        self.in_channels = int(getattr(cfg, "in_channels", 4)) - self.concat_channels  # the sample's channels
        self.learned_variance = int(getattr(cfg, "out_channels", None) or self.in_channels) == 2 * self.in_channels
        self.is_text = hasattr(cfg, "cross_attention_dim") and cfg.cross_attention_dim is not None

    def alpha(self, t: int) -> float:
        """ᾱ_t (float64 Python float); ``t < 0`` gives ``final_alpha_cumprod``."""
        return self.final_alpha_cumprod if t < 0 else float(self.alphas_cumprod[int(t)])

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def raw(self, z: torch.Tensor, t: int | torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """One UNet forward on a batch; returns the raw model output ``(B, C_out, H, W)``."""
        self.calls += 1
        self.samples_evaluated += z.shape[0]
        tt = t if isinstance(t, torch.Tensor) else torch.tensor(int(t), device=z.device)
        z = z.to(self.dtype)
        if self.concat_channels:
            if cond.concat is None or cond.concat.shape[1] != self.concat_channels:
                raise MinorityError(f"This model takes {self.concat_channels} conditioning channels beside the sample "
                                    "(a super-resolution model: give the low-resolution images, `minority upsample`).")
            z = torch.cat([z, cond.concat.to(device=z.device, dtype=z.dtype)], dim=1)
        if self.is_text:
            added = None
            if cond.pooled is not None:
                added = {"text_embeds": cond.pooled.to(self.dtype), "time_ids": cond.time_ids.to(self.dtype)}
            return self.unet(z, tt, encoder_hidden_states=cond.embeds.to(self.dtype), added_cond_kwargs=added).sample
        return self.unet(z, tt, class_labels=cond.class_labels).sample

    def split_variance(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean output, learned-variance values or None) of a raw output."""
        if self.learned_variance:
            mean, var = out.split(self.in_channels, dim=1)
            return mean, var
        return out, None

    def convert(self, z: torch.Tensor, t: int, out: torch.Tensor) -> Prediction:
        """Convert a raw model output to (ε̂, ẑ0) according to ``prediction_type`` (:func:`to_eps_x0`)."""
        out, var_values = self.split_variance(out)
        eps, x0 = to_eps_x0(out.to(z.dtype), z, self.alpha(t), self.prediction_type)
        return Prediction(eps=eps, x0=x0, var_values=var_values)

    def guided_x0(self, z: torch.Tensor, t: int, eps: torch.Tensor, pc: Prediction, pu: Prediction | None,
                  w: float) -> torch.Tensor:
        """ẑ0 of the guided ε̃ ``eps`` at ``z`` (Tweedie, ``(B, C, H, W)``); ``pc``/``pu`` are the branch predictions."""
        alpha = self.alpha(t)
        return (z - (1.0 - alpha) ** 0.5 * eps) / alpha**0.5

    def level(self, fraction: float) -> int:
        """The timestep of a re-noising level given as a fraction p of the schedule (SGMS's and MP's fixed p)."""
        return clamp_level(fraction, self.num_train_timesteps)

    def annealed_level(self, t_next: int) -> int:
        """MinorityPrompt's annealed re-noising timestep s for a step ending at ``t_next`` (SPEC §3.1)."""
        return annealed_perturb_timestep(t_next, self.num_train_timesteps)

    def __call__(self, z: torch.Tensor, t: int, cond: Conditioning) -> Prediction:
        """ε̂, ẑ0 of ``z`` ``(B, C, H, W)`` at integer timestep ``t`` under ``cond`` (differentiable)."""
        return self.convert(z, t, self.raw(z, t, cond))

    def both(self, z: torch.Tensor, t: int, cond: Conditioning, uncond: Conditioning) -> tuple[Prediction, Prediction]:
        """(conditional, unconditional) predictions of the two CFG branches from one batched UNet call."""
        out_u, out_c = self.raw(torch.cat([z, z]), t, Conditioning.cat([uncond, cond])).chunk(2)
        return self.convert(z, t, out_c), self.convert(z, t, out_u)

    # -- the data space: VAE latents of latent models, pixels in [-1, 1] of pixel models ----------------
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (or pixels) ``(B, C, h, w)`` -> images in [0, 1], ``(B, 3|1, H, W)`` float32."""
        if self.vae is None:
            x = z
        else:
            cfg = self.vae.config
            z = z.to(next(self.vae.parameters()).dtype) / cfg.scaling_factor
            if getattr(cfg, "shift_factor", None):
                z = z + cfg.shift_factor
            x = self.vae.decode(z).sample
        return (x.float() / 2 + 0.5).clamp(0, 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [−1, 1] ``(B, C, H, W)`` -> the model's space: scaled VAE posterior means ``(B, c, h, w)``
        (``shift_factor`` and ``scaling_factor`` from the VAE config), or the pixels themselves."""
        if self.vae is None:
            return images
        return encode_with_vae(self.vae, images)


def flow_alpha(sigma: float) -> float:
    """The VP level ᾱ of the flow level σ: x_σ = (1 − σ) x0 + σ ε = c_σ z with z = √ᾱ x0 + √(1−ᾱ) ε,
    √ᾱ = (1 − σ)/c_σ, √(1−ᾱ) = σ/c_σ, c_σ = √((1 − σ)² + σ²)."""
    a, b = (1.0 - sigma) ** 2, sigma**2
    return a / (a + b)


def flow_scale(sigma: float) -> float:
    """c_σ = √((1 − σ)² + σ²): the flow sample is c_σ times the VP sample of level :func:`flow_alpha`."""
    return ((1.0 - sigma) ** 2 + sigma**2) ** 0.5


class FlowDenoiser(Denoiser):
    """The adapter of flow-matching transformers (SD3 / SD3.5 ``SD3Transformer2DModel``, FLUX.1
    ``FluxTransformer2DModel``; SPEC §3.5), presented to the loop and the methods as a VP denoiser.

    Diffusers' flows are x_σ = (1 − σ) x0 + σ ε with the velocity v = ε − x0 predicted, so
    x̂0 = x_σ − σ v̂ and ε̂ = x_σ + (1 − σ) v̂. The loop's sample is the VP-scaled z = x_σ / c_σ of level
    ᾱ(σ) (:func:`flow_alpha`, :func:`flow_scale`; c = 1 at σ = 1 and σ = 0, so the initial noise and the final
    latent are the flow's own). Then the DDIM update z_next = √ᾱ_next x̂0 + √(1−ᾱ_next) ε̃ is exactly the Euler step
    x_next = x + (σ_next − σ) ṽ, and the VP re-noising z_s = √ᾱ_s x̂0 + √(1−ᾱ_s) ε is x_s = (1 − σ_s) x̂0 + σ_s ε:
    every method runs unchanged. Timestep keys t are the pipeline's σ·1000 (``t < 0`` = σ 0).

    Args:
        transformer: the flow transformer (frozen).
        kind: ``"sd3"`` or ``"flux"`` (packed 2×2 latents, image/text ids, σ fed as t/1000, guidance embedding).
        sigmas: the grid's exact σ per timestep key (from the scheduler), others are t/1000.
        sigma_range: (σ_min, σ_max) of the schedule (clamps MinorityPrompt's annealed σ_s).
        vae: the ``AutoencoderKL`` (shift and scaling factors from its config).
    """

    def __init__(self, transformer, kind: str, sigma_range: tuple[float, float], vae=None):
        super().__init__(transformer, torch.linspace(1.0, 0.0, 1000), "epsilon", 1.0, vae=vae)
        self.kind = kind
        self.sigma_range = (float(sigma_range[0]), float(sigma_range[1]))
        self.sigmas: dict[float, float] = {}
        cfg = transformer.config
        self.in_channels = int(cfg.in_channels) // (4 if kind == "flux" else 1)
        self.learned_variance, self.is_text = False, True

    def sigma(self, t: float) -> float:
        """σ of timestep key ``t`` (t < 0: σ = 0)."""
        if t < 0:
            return 0.0
        return self.sigmas.get(float(t), float(t) / 1000.0)

    def alpha(self, t: float) -> float:
        return flow_alpha(self.sigma(t))

    def level(self, fraction: float) -> float:
        """σ_p = p directly (SPEC §3.5), as the timestep key 1000·p."""
        return 1000.0 * min(max(float(fraction), 1e-3), 1.0)

    def annealed_level(self, t_next: float) -> float:
        """σ_s = 1 − σ_next clamped to [σ_min, σ_max] (SPEC §3.5), as a timestep key."""
        lo, hi = self.sigma_range
        return 1000.0 * min(max(1.0 - self.sigma(t_next), lo), hi)

    def raw(self, z: torch.Tensor, t: float, cond: Conditioning) -> torch.Tensor:
        """One transformer forward on x_σ = c_σ z; returns v̂ ``(B, C, h, w)`` (unpacked for FLUX)."""
        self.calls += 1
        self.samples_evaluated += z.shape[0]
        x = (z * flow_scale(self.sigma(t))).to(self.dtype)
        b = x.shape[0]
        tt = torch.tensor(float(t), dtype=torch.float32, device=x.device).expand(b)
        if self.kind == "sd3":
            return self.transformer_call(hidden_states=x, timestep=tt, encoder_hidden_states=cond.embeds.to(self.dtype),
                                         pooled_projections=cond.pooled.to(self.dtype))
        _, c, h, w = x.shape
        packed = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)
        ids = torch.zeros(h // 2, w // 2, 3)
        ids[..., 1] += torch.arange(h // 2)[:, None]
        ids[..., 2] += torch.arange(w // 2)[None, :]
        ids = ids.reshape(-1, 3).to(device=x.device, dtype=self.dtype)
        txt_ids = torch.zeros(cond.embeds.shape[1], 3, device=x.device, dtype=self.dtype)
        guidance = None if cond.guidance is None else cond.guidance.to(device=x.device, dtype=torch.float32)
        out = self.transformer_call(hidden_states=packed, timestep=tt.to(self.dtype) / 1000, guidance=guidance,
                                    pooled_projections=cond.pooled.to(self.dtype),
                                    encoder_hidden_states=cond.embeds.to(self.dtype), txt_ids=txt_ids, img_ids=ids)
        return out.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)

    def transformer_call(self, **kw) -> torch.Tensor:
        return self.unet(**kw, return_dict=False)[0]

    def convert(self, z: torch.Tensor, t: float, out: torch.Tensor) -> Prediction:
        """x̂0 = x_σ − σ v̂, ε̂ = x_σ + (1 − σ) v̂ with x_σ = c_σ z."""
        sigma = self.sigma(t)
        x, v = z * flow_scale(sigma), out.to(z.dtype)
        return Prediction(eps=x + (1.0 - sigma) * v, x0=x - sigma * v)

    def guided_x0(self, z: torch.Tensor, t: float, eps: torch.Tensor, pc: Prediction, pu: Prediction | None,
                  w: float) -> torch.Tensor:
        """Tweedie as for VP models; at σ = 1 (ᾱ = 0, where ε̂ carries no x0) the guided x̂0 of the branches."""
        if self.sigma(t) < 1.0:
            return super().guided_x0(z, t, eps, pc, pu, w)
        return pc.x0 if pu is None else pu.x0 + w * (pc.x0 - pu.x0)


def encode_with_vae(vae, images: torch.Tensor) -> torch.Tensor:
    """Images in [−1, 1] ``(B, 3, H, W)`` -> scaled VAE latents (posterior mean) on the VAE's device/dtype."""
    cfg = vae.config
    p = next(vae.parameters())
    z = vae.encode(images.to(device=p.device, dtype=p.dtype)).latent_dist.mean
    if getattr(cfg, "shift_factor", None):
        z = z - cfg.shift_factor
    return z * cfg.scaling_factor
