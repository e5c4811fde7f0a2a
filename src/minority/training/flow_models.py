"""Architecture of ``fashion-flow``: a small Stable Diffusion 3 (MMDiT transformer, rectified flow) on the latents
of ``fashion-sd``'s VAE, conditioned by ``fashion-sd``'s CLIP text encoder (frozen).

The exported folder is a standard diffusers ``StableDiffusion3Pipeline`` folder without T5 (``text_encoder_3``
null, as SD3 loaded with ``text_encoder_3=None``), loaded by the same code as hub SD3 folders:

* ``text_encoder`` and ``text_encoder_2`` (SD3's CLIP-L / CLIP-G slots) both hold ``fashion-sd``'s 2-layer CLIP
  encoder as a ``CLIPTextModelWithProjection`` with an identity ``text_projection``, so SD3's conditioning is
  ``[h₋₂, h₋₂]`` (penultimate hidden states, ``(B, L, 2·128)``) and pooled ``[p, p]`` ``(B, 256)``;
* the tokenizers stop at ``text_length`` (32) tokens (the captions need ≤ 12; CLIP's causal mask makes the first
  32 states equal to those of a 77-token pass) and T5's zero block is ``max_sequence_length = 0`` tokens long
  (declared in ``model_index.json``'s ``minority_defaults``; with diffusers' own pipeline pass
  ``max_sequence_length=0``): a context of 32 tokens instead of 333 keeps training affordable on a CPU;
* the VAE is ``fashion-sd``'s with SD3's ``shift_factor`` / ``scaling_factor`` set from the training latents.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from minority.pipelines.clip_vocab import write_clip_tokenizer_files


@dataclass(frozen=True)
class FlowArchConfig:
    """Sizes of the MMDiT (written into ``config.json`` of the run)."""

    latent_size: int = 8  # fashion-sd's VAE: 32 px -> 8×8×4
    patch_size: int = 1
    width: int = 192  # heads × head_dim
    head_dim: int = 32
    layers: int = 6
    text_length: int = 32  # CLIP tokens (tokenizer model_max_length)
    max_sequence_length: int = 0  # T5 zero tokens (no T5)


def build_transformer(cfg: FlowArchConfig, text_width: int):
    """``SD3Transformer2DModel``: latents ``(B, 4, 8, 8)``, context ``(B, L, 2·text_width)``, pooled ``(B, 2·text_width)``,
    timestep σ·1000 ``(B,)`` -> velocity ``(B, 4, 8, 8)``."""
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=cfg.latent_size, patch_size=cfg.patch_size, in_channels=4, out_channels=4, num_layers=cfg.layers,
        attention_head_dim=cfg.head_dim, num_attention_heads=cfg.width // cfg.head_dim,
        joint_attention_dim=2 * text_width, caption_projection_dim=cfg.width, pooled_projection_dim=2 * text_width,
        pos_embed_max_size=cfg.latent_size // cfg.patch_size,
    )


def projected_text_encoder(folder: str | Path):
    """``fashion-sd``'s ``CLIPTextModel`` (in ``folder/text_encoder``) as a frozen ``CLIPTextModelWithProjection`` whose
    ``text_projection`` is the identity (pooled output unchanged)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    base = CLIPTextModel.from_pretrained(str(Path(folder) / "text_encoder"), dtype=torch.float32)
    enc = CLIPTextModelWithProjection(base.config)
    enc.text_model.load_state_dict(base.state_dict())  # strict: every tensor, same shapes (v5 flattens CLIPTextModel)
    with torch.no_grad():
        enc.text_projection.weight.copy_(torch.eye(base.config.projection_dim, base.config.hidden_size))
    return enc.eval().requires_grad_(False)


def write_tokenizer(folder: str | Path, text_length: int) -> Path:
    """The real CLIP tokenizer files, padded with ``<|endoftext|>`` and cut at ``text_length`` tokens."""
    folder = write_clip_tokenizer_files(folder)
    cfg_path = Path(folder) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model_max_length"] = int(text_length)
    cfg_path.write_text(json.dumps(cfg))
    return Path(folder)


def build_scheduler(shift: float):
    """``FlowMatchEulerDiscreteScheduler`` with SD3's ``shift`` (1 suits 8×8 latents; SD3 uses 3 at 1024 px)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=float(shift))


def save_sd3_pipeline(folder: str | Path, transformer, vae, text_encoder, scheduler, text_length: int,
                      dtype: torch.dtype = torch.float16) -> Path:
    """Write a standard ``StableDiffusion3Pipeline`` folder without T5 (weights cast to ``dtype``).

    Both CLIP slots get ``text_encoder``; transformers components are declared float32 so that loading upcasts
    the fp16 weights like the diffusers components.
    """
    from diffusers import StableDiffusion3Pipeline
    from transformers import CLIPTokenizer

    folder = Path(folder)
    tok_dir = write_tokenizer(folder / "tokenizer", text_length)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    enc = copy.deepcopy(text_encoder).to("cpu", dtype)
    pipe = StableDiffusion3Pipeline(
        transformer=copy.deepcopy(transformer).to("cpu", dtype), scheduler=scheduler,
        vae=copy.deepcopy(vae).to("cpu", dtype), text_encoder=enc, tokenizer=tokenizer,
        text_encoder_2=copy.deepcopy(enc), tokenizer_2=tokenizer, text_encoder_3=None, tokenizer_3=None,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    for sub in ("text_encoder", "text_encoder_2"):
        cfg_path = folder / sub / "config.json"
        cfg = json.loads(cfg_path.read_text())
        for key in ("dtype", "torch_dtype"):
            if key in cfg:
                cfg[key] = "float32"
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    for sub in ("tokenizer", "tokenizer_2"):  # the real CLIP files (vocab.json + merges.txt), as SD3 folders
        shutil.rmtree(folder / sub)
        write_tokenizer(folder / sub, text_length)
    return folder
