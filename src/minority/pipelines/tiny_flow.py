"""Tiny randomly initialised flow-matching pipelines: SD3-shaped (``StableDiffusion3Pipeline``) and FLUX-shaped
(``FluxPipeline``, dev with guidance embedding or schnell).

Real diffusers folders loaded by the same code as hub checkpoints. CLIP uses the real CLIP tokenizer (built
offline, :mod:`minority.pipelines.clip_vocab`); T5 gets a small Unigram tokenizer trained here with the
``tokenizers`` package (no download). Used by the tests and the performance benchmarks.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
)
from transformers import CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

from minority.pipelines.clip_vocab import write_clip_tokenizer_files
from minority.pipelines.tiny import _text_encoder, _tiny_vae

_CORPUS = ["a photo of a dog", "a painting of a cat on the moon", "an astronaut riding a horse", "commonly-looking",
           "a red car in the city at night", "portrait of an old man with a hat", "a bowl of fruit on a table"]


def write_t5_tokenizer(folder: Path) -> Path:
    """A small Unigram T5 tokenizer (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2; ``</s>`` appended) saved to ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers  # lazy: only tiny builds

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(_CORPUS * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    t5 = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0)
    t5.save_pretrained(str(folder))
    return folder


def _t5_encoder(vocab: int, d_model: int, seed: int) -> T5EncoderModel:
    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(vocab_size=vocab, d_model=d_model, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, decoder_start_token_id=0))


def _clip_pair(folder: Path, sub: str, hidden: int, projection: bool, seed: int, pad: str) -> tuple[list, dict]:
    tok_dir = write_clip_tokenizer_files(folder / sub.replace("text_encoder", "tokenizer"), pad_token=pad)
    vocab = len(CLIPTokenizer.from_pretrained(str(tok_dir)))
    _text_encoder(vocab, hidden, projection=projection, seed=seed).save_pretrained(folder / sub)
    cls = "CLIPTextModelWithProjection" if projection else "CLIPTextModel"
    return [], {sub: ["transformers", cls], sub.replace("text_encoder", "tokenizer"): ["transformers", "CLIPTokenizer"]}


def build_tiny_flow(folder: str | Path, family: str = "sd3", seed: int = 0, sample_size: int = 8,
                    with_t5: bool = True, t5_dim: int = 64) -> Path:
    """Write a tiny random flow pipeline folder and return its path.

    Args:
        folder: destination (created).
        family: ``"sd3"`` (SD3Transformer2DModel, CLIP-L + CLIP-G + T5, shift 3), ``"flux-dev"``
            (FluxTransformer2DModel with guidance embedding, CLIP-L + T5, dynamic shift) or ``"flux-schnell"``.
        seed: torch seed of the random weights.
        sample_size: latent side; images are ``2 * sample_size`` pixels (VAE factor 2).
        with_t5: SD3 only: False writes no T5 (``text_encoder_3``/``tokenizer_3`` None), as loading SD3 without T5.
        t5_dim: T5 width = the transformer's ``joint_attention_dim``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hidden = 32
    vae = _tiny_vae(sample_size, seed + 1)
    vae.register_to_config(shift_factor=0.1, scaling_factor=1.5)
    vae.save_pretrained(folder / "vae")
    index = {"_diffusers_version": "0.42.0", "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}
    torch.manual_seed(seed)
    if family == "sd3":
        net = SD3Transformer2DModel(sample_size=sample_size, patch_size=1, in_channels=4, num_layers=1,
                                    attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                    joint_attention_dim=t5_dim, pooled_projection_dim=2 * hidden, out_channels=4)
        sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
        index.update(_class_name="StableDiffusion3Pipeline", transformer=["diffusers", "SD3Transformer2DModel"])
        index.update(_clip_pair(folder, "text_encoder", hidden, True, seed + 2, "<|endoftext|>")[1])
        index.update(_clip_pair(folder, "text_encoder_2", hidden, True, seed + 3, "!")[1])
        t5_names = ("text_encoder_3", "tokenizer_3")
        index.update(image_encoder=[None, None], feature_extractor=[None, None])
    else:
        net = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                     attention_head_dim=16, num_attention_heads=2, joint_attention_dim=t5_dim,
                                     pooled_projection_dim=hidden, axes_dims_rope=[4, 4, 8],
                                     guidance_embeds=family == "flux-dev")
        dyn = family == "flux-dev"
        sched = FlowMatchEulerDiscreteScheduler(shift=3.0 if dyn else 1.0, use_dynamic_shifting=dyn, base_shift=0.5,
                                                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
        index.update(_class_name="FluxPipeline", transformer=["diffusers", "FluxTransformer2DModel"])
        index.update(_clip_pair(folder, "text_encoder", hidden, False, seed + 2, "<|endoftext|>")[1])
        t5_names = ("text_encoder_2", "tokenizer_2")
        index.update(image_encoder=[None, None], feature_extractor=[None, None])
    net.save_pretrained(folder / "transformer")
    sched.save_pretrained(folder / "scheduler")
    if with_t5 or family != "sd3":
        tok = write_t5_tokenizer(folder / t5_names[1])
        _t5_encoder(len(T5TokenizerFast.from_pretrained(str(tok))), t5_dim, seed + 4).save_pretrained(folder / t5_names[0])
        index.update({t5_names[0]: ["transformers", "T5EncoderModel"], t5_names[1]: ["transformers", "T5TokenizerFast"]})
    else:
        index.update({t5_names[0]: [None, None], t5_names[1]: [None, None]})
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    (folder / "README.md").write_text(f"Tiny RANDOMLY INITIALISED {family}-shaped flow pipeline (seed {seed}); for tests only.\n")
    return folder
