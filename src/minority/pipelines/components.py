"""The loaded model: frozen UNet, scheduler, VAE and text encoders, with the family's sampling defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from minority.core.denoiser import Denoiser
from minority.core.text import PromptEncoder
from minority.pipelines.families import FAMILY_DEFAULTS


@dataclass
class Components:
    """Everything a sampler needs, frozen (``requires_grad_(False)``) and in eval mode.

    Attributes:
        family: ``"sd"`` (SD 1.x/2.x), ``"sdxl"``, ``"sdxl-lightning"`` or ``"pixel"``.
        unet, scheduler: the denoising network and a scheduler carrying its ᾱ table and spacing.
        vae: ``AutoencoderKL`` (latent models) or ``None`` (pixel models).
        tokenizers, text_encoders: one (SD) or two (SDXL) each; empty for pixel models.
        name: what the user asked for (hub id, folder or embedded name).
        low_res_conditioning: super-resolution pixel models (``model_index.json``): ``{"channels": c, "size": s,
            "interpolation": "bilinear"}`` — an s×s image, upsampled to the sample size, concatenated to z_t.
    """

    family: str
    unet: torch.nn.Module
    scheduler: object
    vae: torch.nn.Module | None = None
    tokenizers: list = field(default_factory=list)
    text_encoders: list = field(default_factory=list)
    name: str = ""
    force_zeros_for_empty_prompt: bool = False
    source: str = ""
    null_class_label: int | None = None
    model_defaults: dict = field(default_factory=dict)
    low_res_conditioning: dict | None = None

    @property
    def concat_channels(self) -> int:
        """Network input channels beyond the sample's (the low-resolution image of a super-resolution model)."""
        return int(self.low_res_conditioning["channels"]) if self.low_res_conditioning else 0

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def is_latent(self) -> bool:
        return self.vae is not None

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1

    @property
    def default_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def defaults(self) -> dict:
        """Sampling defaults: the family's (SD 50 steps / w 7.5, Lightning 4 / 1, ...), overridden by the
        model folder's ``minority_defaults`` in ``model_index.json`` (the embedded models declare theirs)."""
        return {**FAMILY_DEFAULTS[self.family], **self.model_defaults}

    def denoiser(self) -> Denoiser:
        s = self.scheduler
        final = getattr(s, "final_alpha_cumprod", torch.tensor(1.0))
        betas = getattr(s.config, "trained_betas", None)  # an exact β table (converted ADM): ᾱ in float64
        abar = s.alphas_cumprod if betas is None else torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), 0)
        return Denoiser(self.unet, abar, s.config.prediction_type, float(final), vae=self.vae,
                        concat_channels=self.concat_channels)

    def prompt_encoder(self) -> PromptEncoder:
        return PromptEncoder(self.tokenizers, self.text_encoders, xl=self.family.startswith("sdxl"),
                             force_zeros_for_empty_prompt=self.force_zeros_for_empty_prompt)

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in [self.unet, self.vae, *self.text_encoders] if m is not None]

    def freeze(self) -> Components:
        for m in self.modules():
            m.requires_grad_(False)
            m.eval()
        return self

    def to(self, device=None, dtype=None) -> Components:
        for m in self.modules():
            m.to(device=device, dtype=dtype)
        if self.vae is not None and dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False):
            self.vae.to(torch.float32)  # SDXL's VAE overflows in fp16 (as diffusers' upcast)
        return self

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (or pixels) ``(B, C, h, w)`` -> images in [0, 1], ``(B, 3|1, H, W)`` float32."""
        return self.denoiser().decode(z)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] ``(B, 3, H, W)`` -> latents ``(B, C, h, w)`` (posterior mean, scaled)."""
        return self.denoiser().encode(images * 2 - 1)
