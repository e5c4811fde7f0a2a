"""Architecture of ``fashion-sd``: a tiny Stable Diffusion (VAE, CLIP text encoder, conditional UNet).

The exported folder is a standard diffusers ``StableDiffusionPipeline`` folder, loaded by the same code
as SD 1.5. Images are 32×32 RGB (gray replicated); latents are 4×8×8 (VAE factor 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from minority.pipelines.clip_vocab import write_clip_tokenizer_files

CLIP_BOS, CLIP_EOS = 49406, 49407

# Stable Diffusion 1.x noise schedule (the DDIM scheduler shipped with the pipeline)
SD_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "clip_sample": False,
    "prediction_type": "epsilon",
}


@dataclass(frozen=True)
class SDArchConfig:
    """Sizes of the three networks (written into ``config.json`` of the run)."""

    image_size: int = 32
    vae_channels: tuple[int, ...] = (32, 32, 64)  # 3 levels -> factor 4
    vae_groups: int = 16
    latent_channels: int = 4
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    unet_channels: tuple[int, ...] = (64, 128, 128)
    unet_layers_per_block: int = 1
    unet_heads: int = 8
    unet_groups: int = 32


def build_vae(cfg: SDArchConfig, scaling_factor: float = 1.0):
    """``AutoencoderKL``: ``(B, 3, S, S)`` in [-1, 1] <-> latents ``(B, 4, S/f, S/f)``, f = 2^(levels−1)."""
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=cfg.vae_channels, layers_per_block=1,
        latent_channels=cfg.latent_channels, norm_num_groups=cfg.vae_groups, sample_size=cfg.image_size,
        scaling_factor=scaling_factor,
    )


def build_text_encoder(cfg: SDArchConfig, vocab_size: int):
    """``CLIPTextModel`` trained from scratch: ids ``(B, 77)`` -> hidden states ``(B, 77, text_hidden)``.

    ``vocab_size`` must be ``len(tokenizer)`` (49,408 for CLIP); ``eos_token_id`` is the real
    ``<|endoftext|>`` id 49407 so pooling never lands on added placeholder tokens.
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=cfg.text_hidden, intermediate_size=4 * cfg.text_hidden,
        projection_dim=cfg.text_hidden, num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
        max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=CLIP_BOS, eos_token_id=CLIP_EOS,
        pad_token_id=CLIP_EOS,
    )
    return CLIPTextModel(config)


def build_unet(cfg: SDArchConfig):
    """``UNet2DConditionModel`` on latents ``(B, 4, S/f, S/f)`` with cross-attention to the text states."""
    from diffusers import UNet2DConditionModel

    n = len(cfg.unet_channels)
    down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
    factor = 2 ** (len(cfg.vae_channels) - 1)
    return UNet2DConditionModel(
        sample_size=cfg.image_size // factor, in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
        down_block_types=down, up_block_types=up, block_out_channels=cfg.unet_channels,
        layers_per_block=cfg.unet_layers_per_block, cross_attention_dim=cfg.text_hidden,
        attention_head_dim=cfg.unet_heads, norm_num_groups=cfg.unet_groups,
    )


def build_train_scheduler():
    """``DDPMScheduler`` with SD's schedule (used for ``add_noise`` during training)."""
    from diffusers import DDPMScheduler

    keep = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "steps_offset", "clip_sample",
            "prediction_type")
    return DDPMScheduler(**{k: SD_SCHEDULE[k] for k in keep})


def save_sd_pipeline(folder: str | Path, vae, text_encoder, unet, tokenizer, dtype: torch.dtype = torch.float16) -> Path:
    """Write a standard ``StableDiffusionPipeline`` folder (weights cast to ``dtype``, DDIM scheduler).

    ``model_index.json`` lists ``safety_checker`` / ``feature_extractor`` as null entries.
    """
    import copy

    from diffusers import DDIMScheduler, StableDiffusionPipeline

    folder = Path(folder)
    pipe = StableDiffusionPipeline(
        vae=copy.deepcopy(vae).to("cpu", dtype), text_encoder=copy.deepcopy(text_encoder).to("cpu", dtype),
        tokenizer=tokenizer, unet=copy.deepcopy(unet).to("cpu", dtype), scheduler=DDIMScheduler(**SD_SCHEDULE),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    _finish_folder(folder)
    return folder


def _finish_folder(folder: Path) -> None:
    """Make the folder load like SD 1.5 in float32 by default.

    * transformers loads with ``dtype="auto"``, i.e. the config's dtype: declare float32 so that the
      fp16-stored text encoder is upcast like the diffusers components.
    * tokenizer as ``vocab.json`` + ``merges.txt`` (the real CLIP files), as in SD 1.5 folders.
    """
    import json
    import shutil


    cfg_path = folder / "text_encoder" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("dtype", "torch_dtype"):
        if key in cfg:
            cfg[key] = "float32"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    shutil.rmtree(folder / "tokenizer")
    write_clip_tokenizer_files(folder / "tokenizer")
