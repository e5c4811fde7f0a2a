"""Model loading and the denoiser adapter.

:func:`load_components` returns ready, frozen components for any diffusers Stable Diffusion checkpoint
(hub id or local folder; SD 1.x, SD 2.x epsilon / v-prediction, SDXL, SDXL-Lightning) or a pixel-space
``UNet2DModel`` checkpoint. :class:`Denoiser` wraps a UNet and converts its output (epsilon, v or
sample prediction) into (ε̂, ẑ0) in exactly one place.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minority.core.conditioning import Conditioning
from minority.errors import MinorityError

log = logging.getLogger("minority")

# Per-family sampling defaults (MP §4.1; SPEC §3.1).
FAMILY_DEFAULTS = {
    "sd": {"steps": 50, "guidance": 7.5},
    "sdxl": {"steps": 50, "guidance": 5.0},
    "sdxl-lightning": {"steps": 4, "guidance": 1.0},
    "pixel": {"steps": 250, "guidance": 1.0},
}


@dataclass
class Prediction:
    """Denoiser output for a batch: noise estimate ε̂ and Tweedie estimate ẑ0 = (z − √(1−ᾱ) ε̂)/√ᾱ,
    both ``(B, C, H, W)``; ``var_values`` ``(B, C, H, W)`` for learned-variance models (else ``None``)."""

    eps: torch.Tensor
    x0: torch.Tensor
    var_values: torch.Tensor | None = None


class Denoiser:
    """Uniform interface over a diffusers UNet: ``denoiser(z, t, cond) -> Prediction``.

    Args:
        unet: ``UNet2DConditionModel`` (text) or ``UNet2DModel`` (pixel).
        alphas_cumprod: ᾱ table ``(T_train,)`` of the scheduler (used as float64).
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.
        final_alpha_cumprod: ᾱ used for the step after the last timestep (t_next = -1).
    """

    def __init__(self, unet, alphas_cumprod: torch.Tensor, prediction_type: str, final_alpha_cumprod: float = 1.0):
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise MinorityError(f"Unsupported prediction_type {prediction_type!r}: expected epsilon, v_prediction or sample.")
        self.unet = unet
        self.alphas_cumprod = alphas_cumprod.detach().to("cpu", torch.float64)
        self.prediction_type = prediction_type
        self.final_alpha_cumprod = float(final_alpha_cumprod)
        self.num_train_timesteps = len(self.alphas_cumprod)
        self.calls = 0  # number of UNet forward calls (batched CFG counts once)
        self.samples_evaluated = 0  # number of per-sample evaluations (CFG counts 2 per image)
        cfg = getattr(unet, "config", None)
        self.in_channels = int(getattr(cfg, "in_channels", 4))
        self.learned_variance = int(getattr(cfg, "out_channels", self.in_channels)) == 2 * self.in_channels
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

    def raw(self, z: torch.Tensor, t: int, cond: Conditioning) -> torch.Tensor:
        """One UNet forward on a batch; returns the raw model output ``(B, C_out, H, W)``."""
        self.calls += 1
        self.samples_evaluated += z.shape[0]
        tt = torch.tensor(int(t), device=z.device)
        z = z.to(self.dtype)
        if self.is_text:
            added = None
            if cond.pooled is not None:
                added = {"text_embeds": cond.pooled.to(self.dtype), "time_ids": cond.time_ids.to(self.dtype)}
            return self.unet(z, tt, encoder_hidden_states=cond.embeds.to(self.dtype), added_cond_kwargs=added).sample
        return self.unet(z, tt, class_labels=cond.class_labels).sample

    def convert(self, z: torch.Tensor, t: int, out: torch.Tensor) -> Prediction:
        """Convert a raw model output to (ε̂, ẑ0) according to ``prediction_type`` (the one place)."""
        var_values = None
        if self.learned_variance:
            out, var_values = out.split(self.in_channels, dim=1)
        a = self.alpha(t)
        sa, s1a = a**0.5, (1.0 - a) ** 0.5
        out = out.to(z.dtype)
        if self.prediction_type == "epsilon":
            eps = out
            x0 = (z - s1a * eps) / sa
        elif self.prediction_type == "v_prediction":
            x0 = sa * z - s1a * out
            eps = sa * out + s1a * z
        else:
            x0 = out
            eps = (z - sa * x0) / s1a
        return Prediction(eps=eps, x0=x0, var_values=var_values)

    def __call__(self, z: torch.Tensor, t: int, cond: Conditioning) -> Prediction:
        """ε̂, ẑ0 of ``z`` ``(B, C, H, W)`` at integer timestep ``t`` under ``cond`` (differentiable)."""
        return self.convert(z, t, self.raw(z, t, cond))


@dataclass
class Components:
    """Everything a sampler needs, frozen (``requires_grad_(False)``) and in eval mode.

    Attributes:
        family: ``"sd"`` (SD 1.x/2.x), ``"sdxl"``, ``"sdxl-lightning"`` or ``"pixel"``.
        unet, scheduler: the denoising network and a scheduler carrying its ᾱ table and spacing.
        vae: ``AutoencoderKL`` (latent models) or ``None`` (pixel models).
        tokenizers, text_encoders: one (SD) or two (SDXL) each; empty for pixel models.
        name: what the user asked for (hub id, folder or embedded name).
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
        return Denoiser(self.unet, s.alphas_cumprod, s.config.prediction_type, float(final))

    def prompt_encoder(self):
        from minority.core.text import PromptEncoder

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
        if self.vae is None:
            x = z
        else:
            cfg = self.vae.config
            z = z.to(next(self.vae.parameters()).dtype) / cfg.scaling_factor
            if getattr(cfg, "shift_factor", None):
                z = z + cfg.shift_factor
            x = self.vae.decode(z).sample
        return (x.float() / 2 + 0.5).clamp(0, 1)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] ``(B, 3, H, W)`` -> latents ``(B, C, h, w)`` (posterior mean, scaled)."""
        if self.vae is None:
            return images * 2 - 1
        cfg = self.vae.config
        x = (images * 2 - 1).to(next(self.vae.parameters()).dtype)
        z = self.vae.encode(x).latent_dist.mean
        if getattr(cfg, "shift_factor", None):
            z = z - cfg.shift_factor
        return z * cfg.scaling_factor


# --------------------------------------------------------------------------------------------------
# Loading


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1] or name.count("/") > 1


TINY_RANDOM = {"tiny-random-sd": "sd", "tiny-random-sdxl": "sdxl"}


def cache_dir() -> Path:
    """``$MINORITY_CACHE`` or ``~/.cache/minority``."""
    return Path(os.environ.get("MINORITY_CACHE", Path.home() / ".cache" / "minority")).expanduser()


def default_model() -> str:
    """``fashion-sd`` once the embedded model ships; until then the tiny random SD pipeline."""
    try:
        from minority.embedded import resolve_embedded

        if resolve_embedded("fashion-sd") is not None:
            return "fashion-sd"
    except ImportError:
        pass
    return "tiny-random-sd"


def resolve_model(name: str) -> tuple[str, str]:
    """Map a ``--model`` value to ``(location, kind)`` with kind ``"folder"``, ``"embedded"``, ``"tiny"`` or ``"hub"``."""
    if name in TINY_RANDOM:
        folder = cache_dir() / name
        if not (folder / "model_index.json").is_file():
            from minority.pipelines.tiny import build_tiny_sd

            log.warning("Building the tiny RANDOMLY INITIALISED pipeline %r in %s (noise-like images).", name, folder)
            build_tiny_sd(folder, family=TINY_RANDOM[name])
        return str(folder), "tiny"
    try:  # embedded models trained and shipped by this project (issue "Embedded offline models")
        from minority.embedded import resolve_embedded  # noqa: PLC0415

        path = resolve_embedded(name)
        if path is not None:
            return str(path), "embedded"
    except ImportError:
        pass
    p = Path(name).expanduser()
    if p.is_dir():
        return str(p), "folder"
    if _looks_like_path(name) or p.suffix:
        raise MinorityError(f"Model folder {name!r} does not exist: pass an existing diffusers folder or a hub id.")
    return name, "hub"


def _missing(name: str, err: Exception) -> MinorityError:
    return MinorityError(
        f"Model {name!r} could not be loaded: it is not a local folder, not an embedded model, and the Hugging Face hub "
        f"(cache {os.environ.get('HF_HOME', '~/.cache/huggingface')}) has no usable copy ({type(err).__name__}). "
        "Pass a local diffusers folder with --model PATH, or run `minority models` for the embedded ones."
    )


def _load_lightning_unet(unet, spec: str):
    """Load SDXL-Lightning UNet weights (a ``.safetensors`` path or ``repo_id/filename``) into ``unet``."""
    from safetensors.torch import load_file

    path = Path(spec).expanduser()
    if not path.is_file():
        if _looks_like_path(spec) and not spec.count("/") >= 2:
            raise MinorityError(f"Lightning UNet file {spec!r} not found: pass a .safetensors path or 'repo_id/file.safetensors'.")
        repo, _, fname = spec.rpartition("/")
        if not repo or not fname.endswith(".safetensors"):
            raise MinorityError(f"Lightning UNet {spec!r} is neither a file nor 'repo_id/file.safetensors' (safetensors only).")
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(repo, fname))
        except Exception as err:  # noqa: BLE001
            raise MinorityError(
                f"Lightning UNet {spec!r} could not be downloaded ({type(err).__name__}): pass a local .safetensors path."
            ) from err
    if path.suffix != ".safetensors":
        raise MinorityError(f"{path} is not a .safetensors file: only safetensors weights are loaded.")
    state = load_file(str(path))
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise MinorityError(
            f"{path} does not fit the base UNet ({len(missing)} missing, {len(unexpected)} unexpected keys): "
            "use the Lightning UNet file that matches the base SDXL model."
        )
    return unet


def load_components(
    model: str,
    *,
    lightning_unet: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Components:
    """Load frozen, ready components for a diffusers checkpoint.

    Args:
        model: hub id (``"stable-diffusion-v1-5/stable-diffusion-v1-5"``, ``"stabilityai/stable-diffusion-2"``,
            ``"stabilityai/stable-diffusion-xl-base-1.0"``, ...), a local diffusers folder, or an embedded
            model name (``minority models``). Text-to-image folders have ``model_index.json``; pixel-space
            folders hold a ``UNet2DModel`` and a scheduler.
        lightning_unet: SDXL-Lightning UNet weights (path or ``repo_id/file.safetensors``) loaded into the
            base SDXL UNet; switches to trailing timesteps with guidance 1 and 4 steps by default.
        device, dtype: where and in which precision to place the modules.
    Returns:
        :class:`Components` with weights frozen (no weight gradients are ever computed).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    location, kind = resolve_model(model)
    kw = {"use_safetensors": True}
    index = _read_index(location, kind, model)
    cls = index.get("_class_name", "")
    if cls in ("DDPMPipeline", "DDIMPipeline", "UNet2DModel") or (index.get("unet") or [None, None])[1] == "UNet2DModel":
        return _load_pixel(location, model, device, dtype, flat=cls == "UNet2DModel", index=index)
    try:
        xl = "text_encoder_2" in index or "XL" in cls
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        unet = UNet2DConditionModel.from_pretrained(location, subfolder="unet", **kw)
        vae = AutoencoderKL.from_pretrained(location, subfolder="vae", **kw)
        tokenizers = [CLIPTokenizer.from_pretrained(location, subfolder="tokenizer")]
        encoders = [CLIPTextModel.from_pretrained(location, subfolder="text_encoder", **kw)]
        if xl:
            tokenizers.append(CLIPTokenizer.from_pretrained(location, subfolder="tokenizer_2"))
            encoders.append(CLIPTextModelWithProjection.from_pretrained(location, subfolder="text_encoder_2", **kw))
        scheduler = DDIMScheduler.from_pretrained(location, subfolder="scheduler")
    except MinorityError:
        raise
    except (OSError, ValueError) as err:
        if kind == "hub":
            raise _missing(model, err) from err
        raise MinorityError(f"Could not load the diffusers folder {location!r}: {str(err).splitlines()[0]}") from err

    family = "sdxl" if xl else "sd"
    if lightning_unet:
        if not xl:
            raise MinorityError("--lightning-unet needs an SDXL base model (e.g. stabilityai/stable-diffusion-xl-base-1.0).")
        _load_lightning_unet(unet, lightning_unet)
        scheduler = DDIMScheduler.from_config(scheduler.config, timestep_spacing="trailing")
        family = "sdxl-lightning"
    comps = Components(
        family=family, unet=unet, scheduler=scheduler, vae=vae, tokenizers=tokenizers, text_encoders=encoders,
        name=model, force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", xl)), source=kind,
        model_defaults=dict(index.get("minority_defaults", {})) if not lightning_unet else {},
    )
    return comps.to(device=device, dtype=dtype).freeze()


def _read_index(location: str, kind: str, name: str) -> dict:
    """``model_index.json`` of a pipeline (or ``config.json`` of a bare ``UNet2DModel`` folder)."""
    folder = Path(location)
    if kind == "hub":
        from huggingface_hub import hf_hub_download

        try:
            return json.loads(Path(hf_hub_download(location, "model_index.json")).read_text())
        except Exception as err:  # noqa: BLE001 -- offline, unknown repo, gated repo, ...
            raise _missing(name, err) from err
    for fname in ("model_index.json", "config.json"):
        if (folder / fname).is_file():
            try:
                return json.loads((folder / fname).read_text())
            except json.JSONDecodeError as err:
                raise MinorityError(f"{folder / fname} is not valid JSON ({err.msg}, line {err.lineno}).") from err
    raise MinorityError(f"{folder} is not a diffusers model folder (no model_index.json): pass a folder saved by diffusers.")


def _load_pixel(location: str, name: str, device, dtype, flat: bool = False, index: dict | None = None) -> Components:
    """Pixel-space ``UNet2DModel`` + ``DDPMScheduler`` (a pipeline folder with ``unet/``, or a flat UNet folder)."""
    from diffusers import DDPMScheduler, UNet2DModel

    kw = {"use_safetensors": True}
    try:
        unet = UNet2DModel.from_pretrained(location, subfolder=None if flat else "unet", **kw)
        scheduler = DDPMScheduler.from_pretrained(location, subfolder="scheduler")
    except (OSError, ValueError) as err:
        raise MinorityError(f"Could not load a pixel-space UNet2DModel from {location!r}: {str(err).splitlines()[0]}") from err
    null = (index or {}).get("null_class_label")
    comps = Components(family="pixel", unet=unet, scheduler=scheduler, name=name, source="folder",
                       null_class_label=None if null is None else int(null),
                       model_defaults=dict((index or {}).get("minority_defaults", {})))
    return comps.to(device=device, dtype=dtype).freeze()


def components_from_pipe(pipe) -> Components:
    """Wrap an existing diffusers ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` (shares its modules)."""
    from diffusers import DDIMScheduler

    xl = getattr(pipe, "text_encoder_2", None) is not None
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if xl else [])
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if xl else [])
    sched = pipe.scheduler
    if not isinstance(sched, DDIMScheduler):
        sched = DDIMScheduler.from_config(sched.config)
    comps = Components(
        family="sdxl" if xl else "sd", unet=pipe.unet, scheduler=sched, vae=pipe.vae, tokenizers=tokenizers,
        text_encoders=encoders, name=getattr(pipe, "name_or_path", "") or type(pipe).__name__,
        force_zeros_for_empty_prompt=bool(getattr(pipe.config, "force_zeros_for_empty_prompt", xl)), source="pipe",
    )
    return comps.freeze()
