"""``MinorityPipeline``: the Python API, shaped like a diffusers text-to-image pipeline.

    pipe = MinorityPipeline.from_pretrained("stabilityai/stable-diffusion-2-1-base")   # or a folder, or
    pipe = MinorityPipeline.from_pipe(existing_diffusers_sd_pipe)                       # share modules
    out = pipe("a photo of a dog", method="cads", num_inference_steps=50, guidance_scale=7.5,
               generator=[torch.Generator().manual_seed(s) for s in (0, 1)], num_images_per_prompt=2)
    out.images  # list of PIL images

Every method's hyperparameters are keyword arguments with the names of SPEC §2 (``tau1=0.6`` ...).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from minority.core.conditioning import Conditioning
from minority.core.rng import make_generators, randn_per_sample
from minority.core.sampling import needs_uncond, sample
from minority.core.schedules import timestep_pairs
from minority.errors import MinorityError
from minority.methods.base import MethodContext, get_method, make_config
from minority.pipelines.components import Components
from minority.pipelines.loading import components_from_pipe, default_model, load_components

log = logging.getLogger("minority")



@dataclass
class MinorityOutput:
    """Result of a pipeline call.

    Attributes:
        images: list of PIL images (``output_type="pil"``), ``(B, H, W, C)`` array in [0, 1] (``"np"``),
            ``(B, C, H, W)`` tensor in [0, 1] (``"pt"``) or the final latents (``"latent"``).
        latents: final z_0 ``(B, C, h, w)``.
        trajectories: per sample, what the method reported per step (e.g. ``{"J": [...], "step": [...]}``).
        settings: resolved steps, guidance, method and hyperparameters, and UNet call counts.
        extras: per sample, what the method returns (MinorityPrompt: ``placeholder`` and ``token_embeds``).
    """

    images: object
    latents: torch.Tensor
    trajectories: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    extras: list[dict] = field(default_factory=list)


def _per_sample_records(records: list[dict], batch: int) -> list[dict]:
    """Turn per-step records (values are per-sample lists of length B) into per-sample trajectories
    ``{"step": [i, ...], key: [value, ...]}``."""
    out: list[dict] = [{} for _ in range(batch)]
    for i, rec in enumerate(records):
        per_sample = {k: v for k, v in rec.items() if isinstance(v, (list, tuple)) and len(v) == batch}
        if not per_sample:
            continue
        for b in range(batch):
            out[b].setdefault("step", []).append(i)
            for k, v in per_sample.items():
                out[b].setdefault(k, []).append(v[b])
    return out


def to_output(images01: torch.Tensor, output_type: str):
    """Convert images in [0, 1] ``(B, C, H, W)`` to the requested diffusers-style ``output_type``."""
    if output_type == "pt":
        return images01
    arr = images01.permute(0, 2, 3, 1).cpu().float().numpy()
    if output_type == "np":
        return arr
    from PIL import Image

    u8 = (arr * 255).round().astype(np.uint8)
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in u8]


class MinorityPipeline:
    """Minority-focused and baseline samplers on a Stable Diffusion (SD 1.x/2.x/SDXL/-Lightning) model.

    Args:
        components: loaded model (:func:`minority.pipelines.loading.load_components`).
    """

    default_method = "ddim"

    def __init__(self, components: Components):
        self.components = components
        self.denoiser = components.denoiser()
        self.prompt_encoder = components.prompt_encoder() if components.text_encoders else None

    @classmethod
    def from_pretrained(cls, model: str | None = None, *, lightning_unet: str | None = None,
                        device: str | torch.device = "cpu", torch_dtype: torch.dtype = torch.float32) -> MinorityPipeline:
        """Load a hub id, local diffusers folder or embedded model (``minority models``; default ``fashion-sd``)."""
        return cls(load_components(model or default_model(), lightning_unet=lightning_unet, device=device, dtype=torch_dtype))

    @classmethod
    def from_pipe(cls, pipe) -> MinorityPipeline:
        """Wrap an existing diffusers ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` (modules shared)."""
        return cls(components_from_pipe(pipe))

    def to(self, device=None, dtype=None) -> MinorityPipeline:
        self.components.to(device=device, dtype=dtype)
        return self

    # ------------------------------------------------------------------------------------------
    def _generators(self, batch: int, generator, seeds) -> tuple[list[torch.Generator], list[int | None]]:
        if seeds is not None:
            seeds = [int(s) for s in seeds]
            if len(seeds) != batch:
                raise MinorityError(f"Got {len(seeds)} seeds for {batch} images: give one seed per image.")
            return make_generators(seeds), seeds
        if generator is None:
            seeds = list(range(batch))
            return make_generators(seeds), seeds
        if isinstance(generator, torch.Generator):
            if batch != 1:
                raise MinorityError(
                    f"One generator was given for {batch} images: pass a list of {batch} generators (one per image) "
                    "so that each image is reproducible on its own."
                )
            generator = [generator]
        if len(generator) != batch:
            raise MinorityError(f"Got {len(generator)} generators for {batch} images: pass one per image.")
        return list(generator), [None] * batch

    def _check_size(self, height: int, width: int) -> None:
        c = self.components
        down = 2 ** (len(c.unet.config.block_out_channels) - 1)
        factor = c.vae_scale_factor * down
        for name, v in (("height", height), ("width", width)):
            if int(v) <= 0 or int(v) % factor:
                raise MinorityError(
                    f"{name}={v} must be a positive multiple of {factor} for this model "
                    f"(VAE factor {c.vae_scale_factor} × UNet down-sampling {down}); e.g. {max(factor, round(v / factor) * factor)}."
                )

    @staticmethod
    def _expand_prompts(prompt, negative_prompt, num_images_per_prompt) -> tuple[list[str], list[str] | None, list[int]]:
        if prompt is None or (not isinstance(prompt, str) and len(prompt) == 0):
            raise MinorityError("No prompt given: pass at least one prompt.")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if any(not isinstance(p, str) for p in prompts):
            raise MinorityError("Prompts must be strings.")
        n = int(num_images_per_prompt)
        if n < 1:
            raise MinorityError(f"num_images_per_prompt must be >= 1 (got {num_images_per_prompt}).")
        prompts = [p for p in prompts for _ in range(n)]
        first: dict[str, int] = {}
        group_ids = [first.setdefault(p, len(first)) for p in prompts]  # images of the same prompt share a group
        if isinstance(negative_prompt, str):
            negs = [negative_prompt] * len(prompts)
        elif negative_prompt is not None:
            negs = [p for p in negative_prompt for _ in range(n)]
            if len(negs) != len(prompts):
                raise MinorityError("Give one negative prompt, or one per prompt.")
        else:
            negs = None
        return prompts, negs, group_ids

    def check_inputs(self, prompts: list[str], num_inference_steps: int | None, guidance_scale: float | None,
                     height: int | None, width: int | None, method: str | None, params: dict,
                     output_type: str = "pil"):
        """Validate and resolve the call's settings (diffusers' ``check_inputs``), before any heavy work.

        Returns ``(method, config, steps, guidance, height, width)``; raises :class:`MinorityError`.
        """
        c = self.components
        if c.family == "pixel":
            raise MinorityError("This is a pixel-space model: use minority.PixelPipeline (class labels, not prompts).")
        m = get_method(method or self.default_method)
        if "text" not in m.kinds:
            raise MinorityError(f"Method {m.name!r} is for pixel-space models only.")
        cfg = make_config(m, params)
        d = c.defaults
        steps = int(num_inference_steps if num_inference_steps is not None else d["steps"])
        if steps < 1:
            raise MinorityError(f"steps must be >= 1 (got {steps}).")
        if guidance_scale is None:
            guidance_scale = m.default_guidance if m.default_guidance is not None else d["guidance"]
        guidance = float(guidance_scale)
        if guidance < 0:
            raise MinorityError(f"guidance must be >= 0 (got {guidance}); 1 disables classifier-free guidance.")
        height = int(height or c.default_size)
        width = int(width or c.default_size)
        self._check_size(height, width)
        if output_type not in ("pil", "np", "pt", "latent"):
            raise MinorityError(f"output_type must be pil, np, pt or latent (got {output_type!r}).")
        pairs = timestep_pairs(c.scheduler, steps)
        ctx = MethodContext(components=c, prompts=prompts, negative_prompts=None, seeds=[], steps=steps,
                            guidance=guidance, pairs=pairs, prompt_encoder=self.prompt_encoder,
                            group_ids=self._expand_prompts(prompts, None, 1)[2])
        cfg.validate(ctx)
        return m, cfg, steps, guidance, height, width

    def prepare(self, prompts: list[str], negative_prompts: list[str] | None, guidance: float, solver: str,
                height: int, width: int) -> tuple[Conditioning, Conditioning | None]:
        """Encode the conditional and (if needed) unconditional branches; SDXL adds time ids."""
        enc = self.prompt_encoder
        cond = enc.encode(prompts)
        uncond = enc.encode_negative(negative_prompts, len(prompts)) if needs_uncond(solver, guidance) else None
        if enc.xl:
            ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32, device=cond.embeds.device)
            cond.time_ids = ids.expand(len(prompts), -1).clone()
            if uncond is not None:
                uncond.time_ids = cond.time_ids.clone()
        return cond, uncond

    def __call__(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        method: str | None = None,
        seeds: Sequence[int] | None = None,
        progress: bool = False,
        **params,
    ) -> MinorityOutput:
        """Generate images.

        Args:
            prompt: one prompt or a list (each repeated ``num_images_per_prompt`` times, consecutively).
            negative_prompt: text of the unconditional branch (default: the method's, else "" / SDXL zeros).
            num_inference_steps: sampling steps T (default per model family: SD 50, Lightning 4).
            guidance_scale: CFG scale w (λ in [0, 1] for ``cfgpp``); 1 skips the unconditional branch.
            height, width: image size in pixels (default: the model's native size).
            generator: one ``torch.Generator`` per image (SPEC §3.4); or give ``seeds``.
            latents: initial z_T ``(B, C, h, w)`` instead of drawing it.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            method: ``ddim``, ``null-prompt``, ``cads``, ``cfgpp``, ``minority-prompt``, ``diverse-prompt``, ``sgms``.
            seeds: one seed per image (default 0..B-1 when no generator is given).
            progress: show a per-step progress bar.
            **params: the method's hyperparameters (SPEC §2 names).
        """
        c = self.components
        prompts, negs, group_ids = self._expand_prompts(prompt, negative_prompt, num_images_per_prompt)
        batch = len(prompts)
        m, cfg, steps, guidance, height, width = self.check_inputs(
            prompts, num_inference_steps, guidance_scale, height, width, method, params, output_type)
        if negs is None and m.default_negative_prompt is not None:
            negs = [m.default_negative_prompt] * batch
        gens, seed_list = self._generators(batch, generator, seeds)
        pairs = timestep_pairs(c.scheduler, steps)
        solver = m.solver_for(cfg)
        cond, uncond = self.prepare(prompts, negs, guidance, solver, height, width)

        # SPEC §3.4: the initial latent is each image's first draw; method draws (random token init, ...) follow.
        shape = (c.unet.config.in_channels, height // c.vae_scale_factor, width // c.vae_scale_factor)
        if latents is None:
            latents = randn_per_sample(gens, shape, device=c.device) * float(getattr(c.scheduler, "init_noise_sigma", 1.0))
        elif tuple(latents.shape) != (batch, *shape):
            raise MinorityError(f"latents must have shape {(batch, *shape)} (got {tuple(latents.shape)}).")
        latents = latents.to(c.device, torch.float32)

        ctx = MethodContext(components=c, prompts=prompts, negative_prompts=negs, seeds=seed_list, steps=steps,
                            guidance=guidance, pairs=pairs, prompt_encoder=self.prompt_encoder, group_ids=group_ids)
        ctx.extra.update(cond=cond, uncond=uncond, height=height, width=width, generators=gens)
        hooks = m.build_hooks(cfg, ctx)

        calls0, evals0 = self.denoiser.calls, self.denoiser.samples_evaluated
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, desc=m.name, leave=False)
        z0, records = sample(self.denoiser, latents, cond, uncond, pairs, guidance, gens, solver=solver,
                             hooks=hooks, progress=(lambda i: bar.update(1)) if bar else None)
        if bar:
            bar.close()
        with torch.no_grad():
            images = z0 if output_type == "latent" else to_output(c.decode(z0), output_type)
        resolved = cfg.to_dict()
        if hasattr(cfg, "resolved"):
            resolved.update(cfg.resolved(c.family))
        settings = {
            "method": m.name, "params": resolved, "steps": steps, "guidance": guidance, "height": height,
            "width": width, "negative_prompt": negs[0] if negs else None, "model": c.name, "family": c.family,
            "unet_calls": self.denoiser.calls - calls0, "unet_sample_evals": self.denoiser.samples_evaluated - evals0,
        }
        extras: list[dict] = [{} for _ in range(batch)]
        for h in hooks:
            for b, r in enumerate(getattr(h, "results", lambda: [{}] * batch)()):
                extras[b].update(r)
        return MinorityOutput(images=images, latents=z0, trajectories=_per_sample_records(records, batch),
                              settings=settings, extras=extras)


class MinorityPromptPipeline(MinorityPipeline):
    """:class:`MinorityPipeline` whose default method is ``minority-prompt`` (MP Alg. 1).

    ``pipe(prompt, num_inference_steps=50, guidance_scale=7.5, generator=[...], opt_steps=3, lr=0.01, ...)``;
    ``out.extras[k]["token_embeds"]`` holds image k's optimised token (textual-inversion layout).
    """

    default_method = "minority-prompt"
