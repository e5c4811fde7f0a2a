"""What a method sees of a run: :class:`RunContext`, built once per batch by the pipeline run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from minority.core.conditioning import Conditioning
from minority.core.text import PromptEncoder


@dataclass
class RunContext:
    """The run a method's hooks act in (B samples).

    Attributes:
        family: model family (``sd``, ``sdxl``, ``sdxl-lightning``, ``pixel``).
        latent: True for latent (VAE) models.
        prompts: one prompt per sample ``(B,)`` — or class-label strings for pixel models.
        seeds: per-sample seeds (None where the caller gave generators).
        group_ids: per-sample prompt index (samples with equal id share a prompt).
        steps, guidance: sampling steps T and guidance w (λ for CFG++).
        pairs: the (t, t_next) grid.
        spacing: how the grid was built (``scheduler`` or ``adm``: guided-diffusion's respacing).
        prompt_encoder: text encoders (None for pixel models).
        unet: the denoising network (frozen).
        scheduler: the model's scheduler (its ᾱ table and spacing).
        cond, uncond: the encoded conditioning of the two branches (None before encoding).
        generators: one CPU generator per sample (SPEC §3.4).
    """

    family: str
    latent: bool
    prompts: list[str]
    seeds: list[int | None]
    group_ids: list[int]
    steps: int
    guidance: float
    pairs: Sequence[tuple[int, int]]
    prompt_encoder: PromptEncoder | None = None
    unet: torch.nn.Module | None = None
    scheduler: object = None
    cond: Conditioning | None = None
    uncond: Conditioning | None = None
    generators: list[torch.Generator] = field(default_factory=list)
    spacing: str = "scheduler"
