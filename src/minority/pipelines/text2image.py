"""``MinorityPipeline``: the Python API, shaped like a diffusers text-to-image pipeline.

    pipe = MinorityPipeline.from_pretrained("stabilityai/stable-diffusion-2-1-base")   # or a folder, or
    pipe = MinorityPipeline.from_pipe(existing_diffusers_sd_pipe)                       # share modules
    out = pipe("a photo of a dog", method="cads", num_inference_steps=50, guidance_scale=7.5,
               generator=[torch.Generator().manual_seed(s) for s in (0, 1)], num_images_per_prompt=2)
    out.images  # list of PIL images

Every method's hyperparameters are keyword arguments with the names of SPEC §2 (``tau1=0.6`` ...), or pass a
method object: ``pipe("a dog", method=minority.methods.CADS(tau1=0.5))``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from minority.core.conditioning import Conditioning
from minority.core.sampling import needs_uncond
from minority.errors import MinorityError
from minority.methods import Method
from minority.pipelines.components import Components
from minority.pipelines.flow_loading import FlowComponents
from minority.pipelines.loading import components_from_pipe, default_model, load_components
from minority.pipelines.run import (  # noqa: F401  (MinorityOutput, to_output: re-exported)
    MinorityOutput,
    Pipeline,
    RunPlan,
    Sampling,
    to_output,
    wants_uncond,
)


def expand_prompts(prompt, negative_prompt, num_images_per_prompt) -> tuple[list[str], list[str] | None, list[int]]:
    """Per-image prompts (each repeated ``num_images_per_prompt`` times, consecutively), negative prompts and
    prompt-group ids (images of the same prompt share a group)."""
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
    group_ids = [first.setdefault(p, len(first)) for p in prompts]
    if isinstance(negative_prompt, str):
        negs = [negative_prompt] * len(prompts)
    elif negative_prompt is not None:
        negs = [p for p in negative_prompt for _ in range(n)]
        if len(negs) != len(prompts):
            raise MinorityError("Give one negative prompt, or one per prompt.")
    else:
        negs = None
    return prompts, negs, group_ids


class MinorityPipeline(Pipeline):
    """Minority-focused and baseline samplers on a Stable Diffusion (SD 1.x/2.x/SDXL/-Lightning) model.

    Args:
        components: loaded model (:func:`minority.pipelines.loading.load_components`).
    """

    kind = "text"
    default_method = "ddim"

    def __init__(self, components: Components):
        if components.family == "pixel":
            raise MinorityError("This is a pixel-space model: use minority.PixelPipeline (class labels, not prompts).")
        super().__init__(components)
        self.prompt_encoder = components.prompt_encoder() if components.text_encoders else None

    @classmethod
    def from_pretrained(cls, model: str | None = None, *, lightning_unet: str | None = None, config: str | None = None,
                        device: str | torch.device = "cpu", torch_dtype: torch.dtype = torch.float32) -> MinorityPipeline:
        """Load a hub id, local diffusers folder, embedded model (``minority models``; default ``fashion-sd``) or a
        single-file SD / SDXL ``.safetensors`` (``config``: its base model's diffusers folder or hub id)."""
        return cls(load_components(model or default_model(), lightning_unet=lightning_unet, config=config,
                                   device=device, dtype=torch_dtype))

    @classmethod
    def from_pipe(cls, pipe) -> MinorityPipeline:
        """Wrap an existing diffusers ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` (modules shared)."""
        return cls(components_from_pipe(pipe))

    # -- what differs from a pixel model ---------------------------------------------------------------
    def default_guidance(self, method: Method, items: list) -> float:
        """The method's own (cfgpp: λ 0.6), else the model's (``minority_defaults``) or the family's."""
        return method.default_guidance if method.default_guidance is not None else self.components.defaults["guidance"]

    def resolve_size(self, sampling: Sampling) -> tuple[int, int]:
        c = self.components
        height, width = int(sampling.height or c.default_size), int(sampling.width or c.default_size)
        if isinstance(c, FlowComponents):
            down, what = c.patch, "transformer patch" + (" × 2×2 latent packing" if c.family.startswith("flux") else "")
        else:
            down, what = 2 ** (len(c.unet.config.block_out_channels) - 1), "UNet down-sampling"
        factor = c.vae_scale_factor * down
        for name, v in (("height", height), ("width", width)):
            if v % factor:
                raise MinorityError(
                    f"{name}={v} must be a positive multiple of {factor} for this model (VAE factor "
                    f"{c.vae_scale_factor} × {what} {down}); e.g. {max(factor, round(v / factor) * factor)}."
                )
        return height, width

    def grid(self, steps: int, height: int, width: int, spacing: str = "scheduler") -> tuple:
        c = self.components
        if not isinstance(c, FlowComponents):
            return self.pairs(steps, spacing)
        if spacing != "scheduler":
            raise MinorityError(f"spacing {spacing!r} is for pixel DDPM models; flow models use their scheduler's grid.")
        pairs, sigmas = c.grid(steps, height, width)
        self.denoiser.sigmas.update(sigmas)  # the exact σ of each grid timestep (float32 as the scheduler's)
        return tuple(pairs)

    def check_method(self, method: Method, guidance: float) -> None:
        """Refuse what a flow family cannot run (FLUX has no unconditional branch: guidance is embedded or absent)."""
        fam = self.components.family
        if fam.startswith("flux") and (method.solver_name() == "cfgpp" or method.default_negative_prompt is not None):
            why = "takes its guidance as an embedding" if fam == "flux-dev" else "is guidance-distilled"
            raise MinorityError(f"{method.name} needs classifier-free guidance with an unconditional branch, and {fam} "
                                f"{why} (one transformer call per step, no negative prompt): use ddim, cads, sgms or "
                                "minority-prompt.")
        if fam == "flux-schnell" and guidance not in (0.0, 1.0):
            raise MinorityError(f"FLUX.1-schnell takes no guidance (got --guidance {guidance:g}): leave it at 0.")

    def encode(self, plan: RunPlan, items: list, negatives: list[str] | None) -> tuple[Conditioning, Conditioning | None]:
        return self.encode_prompts(items, negatives, wants_uncond(plan), plan.height, plan.width, plan.guidance)

    def prepare(self, prompts: list[str], negative_prompts: list[str] | None, guidance: float, solver: str,
                height: int, width: int) -> tuple[Conditioning, Conditioning | None]:
        """The conditioning of a sampler's two branches (the unconditional one only if ``solver`` at ``guidance``
        uses it), for callers that drive the loop themselves (likelihood, minority score, benchmarks)."""
        return self.encode_prompts(prompts, negative_prompts, needs_uncond(solver, guidance), height, width, guidance)

    def encode_prompts(self, items: list[str], negatives: list[str] | None, with_uncond: bool, h: int,
                       w: int, guidance: float = 1.0) -> tuple[Conditioning, Conditioning | None]:
        """Encode the conditional and (``with_uncond``) unconditional branches; SDXL adds time ids; FLUX never
        has an unconditional branch, FLUX-dev carries the guidance w per sample (its guidance embedding)."""
        enc = self.prompt_encoder
        cond = enc.encode(items)
        fam = self.components.family
        if fam.startswith("flux"):
            if self.components.unet.config.guidance_embeds:
                cond.guidance = torch.full((len(items),), float(guidance), device=cond.embeds.device)
            return cond, None
        uncond = enc.encode_negative(negatives, len(items)) if with_uncond else None
        if enc.xl:
            ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32, device=cond.embeds.device)
            cond.time_ids = ids.expand(len(items), -1).clone()
            if uncond is not None:
                uncond.time_ids = cond.time_ids.clone()
        return cond, uncond

    def latent_shape(self, plan: RunPlan) -> tuple[int, int, int]:
        """(C, h, w) of the latent drawn per image: FLUX's before 2×2 packing (in_channels / 4), as FluxPipeline."""
        c = self.components
        ch = c.unet.config.in_channels // (4 if c.family.startswith("flux") else 1)
        return ch, plan.height // c.vae_scale_factor, plan.width // c.vae_scale_factor

    # -- the front door ----------------------------------------------------------------------------------
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
        method: str | Method | None = None,
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
            method: a name (``ddim``, ``null-prompt``, ``cads``, ``cfgpp``, ``minority-prompt``, ``diverse-prompt``,
                ``sgms``) or a method object (:mod:`minority.methods`).
            seeds: one seed per image (default 0..B-1 when no generator is given).
            progress: show a per-step progress bar.
            **params: the method's hyperparameters (SPEC §2 names).
        """
        prompts, negs, group_ids = expand_prompts(prompt, negative_prompt, num_images_per_prompt)
        plan = self.plan(prompts, method, params, steps=num_inference_steps, guidance=guidance_scale, height=height,
                         width=width, output_type=output_type, group_ids=group_ids)
        if negs is None and plan.method.default_negative_prompt is not None:
            negs = [plan.method.default_negative_prompt] * len(prompts)
        return self.run_batch(plan, prompts, negatives=negs, group_ids=group_ids, generator=generator, seeds=seeds,
                              latents=latents, progress=progress)


class MinorityPromptPipeline(MinorityPipeline):
    """:class:`MinorityPipeline` whose default method is ``minority-prompt`` (MP Alg. 1).

    ``pipe(prompt, num_inference_steps=50, guidance_scale=7.5, generator=[...], opt_steps=3, lr=0.01, ...)``;
    ``out.extras[k]["token_embeds"]`` holds image k's optimised token (textual-inversion layout).
    """

    default_method = "minority-prompt"
