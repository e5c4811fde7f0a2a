"""Tiny randomly initialised Stable Diffusion pipelines (SD 1.x/2.x-shaped and SDXL-shaped).

They are real diffusers folders (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ...) saved as
safetensors, loaded by exactly the same code as hub checkpoints. Used by the test suite, by the
performance benchmarks, and by ``make run`` as a stand-in until the embedded trained models exist.
They use the real CLIP tokenizer (built offline, :mod:`minority.pipelines.clip_vocab`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from minority.pipelines.clip_vocab import write_clip_tokenizer_files


def _text_encoder(vocab_size: int, hidden: int, projection: bool, seed: int):
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_size=hidden, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=3, vocab_size=vocab_size,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=hidden,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def _tiny_unet(hidden: int, xl: bool, sample_size: int, seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=sample_size, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * hidden if xl else hidden, attention_head_dim=(2, 4) if xl else 8,
        norm_num_groups=32,
        **(dict(addition_embed_type="text_time", addition_time_embed_dim=8, use_linear_projection=True,
                projection_class_embeddings_input_dim=6 * 8 + hidden) if xl else {}),
    )


def _tiny_vae(sample_size: int, seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, norm_num_groups=32,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4, sample_size=2 * sample_size,
    )


def build_tiny_sd(
    folder: str | Path,
    family: str = "sd",
    prediction_type: str = "epsilon",
    seed: int = 0,
    sample_size: int = 8,
    timestep_spacing: str = "leading",
) -> Path:
    """Write a tiny random diffusers pipeline folder and return its path.

    Args:
        folder: destination folder (created).
        family: ``"sd"`` (UNet2DConditionModel + one CLIP text encoder) or ``"sdxl"`` (two encoders,
            ``text_time`` added conditioning, pooled embedding from encoder 2).
        prediction_type: ``"epsilon"`` (SD 1.x / 2.x base) or ``"v_prediction"`` (SD 2.x 768).
        seed: torch seed for the random weights.
        sample_size: latent side; images are ``2 * sample_size`` pixels (VAE factor 2).
        timestep_spacing: scheduler spacing (``"leading"`` as SD, ``"trailing"`` as SDXL-Lightning).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hidden = 32
    xl = family == "sdxl"
    unet, vae = _tiny_unet(hidden, xl, sample_size, seed), _tiny_vae(sample_size, seed + 1)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type, timestep_spacing=timestep_spacing,
    )
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    scheduler.save_pretrained(folder / "scheduler")
    tok_dir = write_clip_tokenizer_files(folder / "tokenizer", pad_token="<|endoftext|>")
    vocab = len(CLIPTokenizer.from_pretrained(str(tok_dir)))
    _text_encoder(vocab, hidden, projection=False, seed=seed + 2).save_pretrained(folder / "text_encoder")
    index = {
        "_class_name": "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if xl:
        write_clip_tokenizer_files(folder / "tokenizer_2", pad_token="!")
        _text_encoder(vocab, hidden, projection=True, seed=seed + 3).save_pretrained(folder / "text_encoder_2")
        index.update({
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "force_zeros_for_empty_prompt": True,
        })
    else:
        index.update({"safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False})
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    (folder / "README.md").write_text(
        f"Tiny RANDOMLY INITIALISED {family.upper()}-shaped pipeline (seed {seed}, {prediction_type}). "
        "It draws noise-like images; it exists for tests and smoke runs only.\n"
    )
    return folder
