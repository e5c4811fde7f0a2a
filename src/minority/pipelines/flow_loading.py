"""Loading the flow-matching families (SPEC §3.5): ``StableDiffusion3Pipeline`` folders (SD3-medium, SD3.5
medium / large / large-turbo; with or without T5) and ``FluxPipeline`` folders (FLUX.1-dev, FLUX.1-schnell), and
their sampling grid exactly as those pipelines build it (SD3 ``shift``; FLUX's dynamic shift μ from the
image sequence length).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from minority.core.denoiser import FlowDenoiser
from minority.core.flow_text import FlowPromptEncoder
from minority.errors import MinorityError
from minority.pipelines.components import Components

FLOW_FAMILIES = ("sd3", "flux-dev", "flux-schnell")


def calculate_shift(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5,
                    max_shift: float = 1.15) -> float:
    """FLUX's μ: linear in the image sequence length (diffusers' ``calculate_shift``)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * m + base_shift - m * base_seq_len


@dataclass
class FlowComponents(Components):
    """:class:`Components` of a flow transformer (``unet`` holds the transformer) plus the T5 pair (or None)."""

    t5_tokenizer: object = None
    t5_encoder: torch.nn.Module | None = None
    max_sequence_length: int = 256

    @property
    def patch(self) -> int:
        return int(self.unet.config.patch_size) * (2 if self.family.startswith("flux") else 1)

    @property
    def default_size(self) -> int:
        size = getattr(self.unet.config, "sample_size", None)
        return int(size or 128) * self.vae_scale_factor

    def denoiser(self) -> FlowDenoiser:
        s = self.scheduler
        return FlowDenoiser(self.unet, "flux" if self.family.startswith("flux") else "sd3",
                            (float(s.sigma_min), float(s.sigma_max)), vae=self.vae)

    def prompt_encoder(self) -> FlowPromptEncoder:
        return FlowPromptEncoder("flux" if self.family.startswith("flux") else "sd3", self.tokenizers,
                                 self.text_encoders, self.t5_tokenizer, self.t5_encoder, self.max_sequence_length,
                                 int(self.unet.config.joint_attention_dim))

    def modules(self) -> list[torch.nn.Module]:
        return super().modules() + ([self.t5_encoder] if self.t5_encoder is not None else [])

    def grid(self, steps: int, height: int, width: int) -> tuple[list[tuple[float, float]], dict[float, float]]:
        """(t, t_next) pairs (t = the pipeline's timestep σ·1000; ``-1`` after the last step) and σ per t, from a
        copy of the scheduler set as ``StableDiffusion3Pipeline`` / ``FluxPipeline`` set it."""
        if int(steps) < 1:
            raise MinorityError(f"steps must be >= 1 (got {steps}).")
        sched = type(self.scheduler).from_config(self.scheduler.config)
        cfg, f = sched.config, self.vae_scale_factor
        kw: dict = {}
        if self.family.startswith("flux"):
            seq = (height // (f * 2)) * (width // (f * 2))
            kw["sigmas"] = None if cfg.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
        else:
            p = int(self.unet.config.patch_size)
            seq = (height // f // p) * (width // f // p)
        if cfg.get("use_dynamic_shifting"):
            kw["mu"] = calculate_shift(seq, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                                       cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.16 if self.family == "sd3" else 1.15))
        if kw.get("sigmas") is not None:
            sched.set_timesteps(sigmas=kw.pop("sigmas"), **kw)
        else:
            kw.pop("sigmas", None)
            sched.set_timesteps(int(steps), **kw)
        ts = [float(t) for t in sched.timesteps]
        table = {t: float(s) for t, s in zip(ts, sched.sigmas)}
        return list(zip(ts, ts[1:] + [-1.0])), table


def _check_fit(family: str, net, encoders: list, t5) -> None:
    """A folder whose transformer and text encoders do not fit together: name the mismatching dimension."""
    cfg = net.config
    pooled = sum(int(getattr(e.config, "projection_dim" if family == "sd3" else "hidden_size")) for e in encoders)
    if pooled != int(cfg.pooled_projection_dim):
        raise MinorityError(f"The text encoders' pooled width {pooled} does not fit the transformer's "
                            f"pooled_projection_dim {cfg.pooled_projection_dim}: use text encoders of the same model.")
    if t5 is not None and int(t5.config.d_model) != int(cfg.joint_attention_dim):
        raise MinorityError(f"T5's d_model {t5.config.d_model} does not fit the transformer's joint_attention_dim "
                            f"{cfg.joint_attention_dim}: use the T5 encoder of the same model.")
    if family == "sd3":
        width = sum(int(e.config.hidden_size) for e in encoders)
        if width > int(cfg.joint_attention_dim):
            raise MinorityError(f"The CLIP encoders' hidden width {width} exceeds the transformer's joint_attention_dim "
                                f"{cfg.joint_attention_dim}: use text encoders of the same model.")


def _max_sequence_length(index: dict, flux: bool) -> int:
    """T5's length: diffusers' default (FLUX 512, SD3 256) unless the folder declares its own (``fashion-flow``: 0,
    i.e. no T5 block at all), as ``minority_defaults.max_sequence_length`` in ``model_index.json``."""
    declared = (index.get("minority_defaults") or {}).get("max_sequence_length")
    if declared is None:
        return 512 if flux else 256
    if not isinstance(declared, int) or isinstance(declared, bool) or not 0 <= declared <= 512:
        raise MinorityError(f"model_index.json declares max_sequence_length {declared!r}: it must be an integer "
                            "0..512; fix the model folder's minority_defaults.")
    return declared


def load_flow(location: str, name: str, index: dict, kind: str, device, dtype, hub: dict | None = None) -> FlowComponents:
    """Load an SD3 / FLUX diffusers folder (or cached hub repo at ``location``) into frozen :class:`FlowComponents`."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
    )
    from transformers import (
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        T5EncoderModel,
        T5TokenizerFast,
    )

    flux = index.get("_class_name") == "FluxPipeline"
    hub = hub or {}  # local_files_only for hub ids while the hub is unreachable
    kw = {"use_safetensors": True, **hub}
    t5_sub = "text_encoder_2" if flux else "text_encoder_3"
    has_t5 = (index.get(t5_sub) or [None, None])[1] is not None
    net_cls = FluxTransformer2DModel if flux else SD3Transformer2DModel
    net = net_cls.from_pretrained(location, subfolder="transformer", **kw)
    vae = AutoencoderKL.from_pretrained(location, subfolder="vae", **kw)
    sched = FlowMatchEulerDiscreteScheduler.from_pretrained(location, subfolder="scheduler", **hub)
    subs = ["text_encoder"] if flux else ["text_encoder", "text_encoder_2"]
    enc_cls = CLIPTextModel if flux else CLIPTextModelWithProjection
    encoders = [enc_cls.from_pretrained(location, subfolder=s, **kw) for s in subs]
    tokenizers = [CLIPTokenizer.from_pretrained(location, subfolder=s.replace("text_encoder", "tokenizer"), **hub)
                  for s in subs]
    t5 = T5EncoderModel.from_pretrained(location, subfolder=t5_sub, **kw) if has_t5 else None
    t5_tok = (T5TokenizerFast.from_pretrained(location, subfolder=t5_sub.replace("text_encoder", "tokenizer"), **hub)
              if has_t5 else None)
    family = ("flux-dev" if net.config.guidance_embeds else "flux-schnell") if flux else "sd3"
    _check_fit(family, net, encoders, t5)
    comps = FlowComponents(family=family, unet=net, scheduler=sched, vae=vae, tokenizers=tokenizers,
                           text_encoders=encoders, name=name, source=kind, t5_tokenizer=t5_tok, t5_encoder=t5,
                           max_sequence_length=_max_sequence_length(index, flux),
                           model_defaults=dict(index.get("minority_defaults", {})))
    return comps.to(device=device, dtype=dtype).freeze()
