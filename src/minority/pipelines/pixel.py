"""``PixelPipeline``: pixel-space diffusers ``UNet2DModel`` checkpoints (unconditional or class-conditional)
with the ``ancestral`` (DDPM), ``ddim`` and ``sgms`` samplers on the shared loop.

    pipe = PixelPipeline.from_pretrained("google/ddpm-cifar10-32")      # or a folder / "fashion-ddpm"
    out = pipe(num_images=4, method="sgms", scale=1.0, seeds=range(4))
    out = pipe(class_labels=[3, 3, 7], method="ancestral")             # class-conditional models
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from minority.core.conditioning import Conditioning
from minority.core.rng import make_generators, randn_per_sample
from minority.core.sampling import sample
from minority.core.schedules import timestep_pairs
from minority.errors import MinorityError
from minority.methods.base import MethodContext, get_method, make_config
from minority.pipelines.components import Components
from minority.pipelines.loading import load_components
from minority.pipelines.text2image import MinorityOutput, _per_sample_records, to_output


class PixelPipeline:
    """Samplers for a pixel-space model (:class:`minority.pipelines.loading.Components` with ``family="pixel"``)."""

    default_method = "ancestral"

    def __init__(self, components: Components):
        if components.family != "pixel":
            raise MinorityError("PixelPipeline needs a pixel-space UNet2DModel; use MinorityPipeline for SD models.")
        self.components = components
        self.denoiser = components.denoiser()

    @classmethod
    def from_pretrained(cls, model: str, *, device: str | torch.device = "cpu",
                        torch_dtype: torch.dtype = torch.float32) -> PixelPipeline:
        return cls(load_components(model, device=device, dtype=torch_dtype))

    @property
    def num_classes(self) -> int | None:
        n = getattr(self.components.unet.config, "num_class_embeds", None)
        return int(n) if n else None

    def labels_tensor(self, class_labels: Sequence[int | None]) -> torch.Tensor | None:
        """Class labels ``(B,)`` (None entries = the model's null class); None for unconditional models."""
        n, null = self.num_classes, self.components.null_class_label
        if n is None:
            if any(lab is not None for lab in class_labels):
                raise MinorityError("This model is unconditional: drop --class-label.")
            return None
        out = []
        for lab in class_labels:
            if lab is None:
                if null is None:
                    raise MinorityError(f"This model is class-conditional ({n} classes) without a null class: "
                                        f"pass --class-label in 0..{n - 1}.")
                lab = null
            if not 0 <= int(lab) < n:
                raise MinorityError(f"class label {lab} is out of range: this model has classes 0..{n - 1}.")
            out.append(int(lab))
        return torch.tensor(out, dtype=torch.long, device=self.components.device)

    def check_inputs(self, class_labels, num_inference_steps, guidance_scale, method, params, output_type="pil"):
        """Validate and resolve (method, config, solver, steps, guidance, labels)."""
        c = self.components
        m = get_method(method or self.default_method)
        if "pixel" not in m.kinds:
            raise MinorityError(f"Method {m.name!r} needs a text-to-image model; pixel models take ancestral, ddim or sgms.")
        cfg = make_config(m, params)
        steps = int(num_inference_steps if num_inference_steps is not None else c.defaults["steps"])
        if steps < 1:
            raise MinorityError(f"steps must be >= 1 (got {steps}).")
        conditional = any(lab is not None and lab != c.null_class_label for lab in class_labels)
        default_w = c.defaults["guidance"] if conditional and c.null_class_label is not None else 1.0
        guidance = float(default_w if guidance_scale is None else guidance_scale)
        if guidance < 0:
            raise MinorityError(f"guidance must be >= 0 (got {guidance}).")
        labels = self.labels_tensor(class_labels)
        if guidance != 1.0 and (self.num_classes is None or c.null_class_label is None):
            raise MinorityError("Classifier-free guidance needs a class-conditional model with a null class: use --guidance 1.")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise MinorityError(f"output_type must be pil, np, pt or latent (got {output_type!r}).")
        pairs = timestep_pairs(c.scheduler, steps)
        solver = getattr(cfg, "solver", None) or ("ancestral" if m.name in ("ancestral", "sgms") else m.solver)
        ctx = MethodContext(components=c, prompts=[str(x) for x in class_labels], negative_prompts=None, seeds=[],
                            steps=steps, guidance=guidance, pairs=pairs)
        cfg.validate(ctx)
        return m, cfg, solver, steps, guidance, labels, pairs

    def __call__(
        self,
        class_labels: int | Sequence[int | None] | None = None,
        num_images: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: Sequence[torch.Generator] | None = None,
        seeds: Sequence[int] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        method: str | None = None,
        progress: bool = False,
        **params,
    ) -> MinorityOutput:
        """Sample images.

        Args:
            class_labels: one label per image (None entries: unconditional via the null class), a single label,
                or None (unconditional) with ``num_images``.
            num_images: batch size when ``class_labels`` is None or a single int.
            num_inference_steps: steps (default 250; 1000 = the full DDPM chain).
            guidance_scale: CFG over the null class (1 = none; default: the model folder's ``minority_defaults``
                guidance for class-conditional sampling, else 1).
            generator / seeds: one per image (SPEC §3.4).
            method: ``ancestral``, ``ddim`` or ``sgms`` (SGMS flags as keyword arguments).
        """
        c = self.components
        if class_labels is None or isinstance(class_labels, int):
            labels = [class_labels] * int(num_images or (len(seeds) if seeds is not None else 1))
        else:
            labels = list(class_labels)
        batch = len(labels)
        m, cfg, solver, steps, guidance, label_t, pairs = self.check_inputs(
            labels, num_inference_steps, guidance_scale, method, params, output_type)
        if generator is not None:
            gens, seed_list = list(generator), [None] * batch
        else:
            seed_list = [int(s) for s in seeds] if seeds is not None else list(range(batch))
            gens = make_generators(seed_list)
        if len(gens) != batch:
            raise MinorityError(f"Got {len(gens)} generators/seeds for {batch} images: give one per image.")
        cfg_unet = c.unet.config
        shape = (cfg_unet.in_channels, cfg_unet.sample_size, cfg_unet.sample_size)
        if latents is None:
            latents = randn_per_sample(gens, shape, device=c.device)
        latents = latents.to(c.device, torch.float32)
        cond = Conditioning(class_labels=label_t)
        uncond = None
        if guidance != 1.0:
            uncond = Conditioning(class_labels=torch.full_like(label_t, c.null_class_label))
        ctx = MethodContext(components=c, prompts=[str(x) for x in labels], negative_prompts=None, seeds=seed_list,
                            steps=steps, guidance=guidance, pairs=pairs)
        ctx.extra.update(cond=cond, uncond=uncond, generators=gens, solver=solver)
        hooks = m.build_hooks(cfg, ctx)
        sc = c.scheduler.config
        clip = float(getattr(sc, "clip_sample_range", 1.0)) if getattr(sc, "clip_sample", False) else None
        calls0 = self.denoiser.calls
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, desc=m.name, leave=False)
        z0, records = sample(self.denoiser, latents, cond, uncond, pairs, guidance, gens, solver=solver, hooks=hooks,
                             progress=(lambda i: bar.update(1)) if bar else None, clip_sample=clip,
                             variance_type=getattr(sc, "variance_type", "fixed_small"))
        if bar:
            bar.close()
        images01 = (z0.float() / 2 + 0.5).clamp(0, 1)
        images = z0 if output_type == "latent" else to_output(images01, output_type)
        params_out = cfg.to_dict()
        if hasattr(cfg, "resolved"):
            params_out.update(cfg.resolved(c.family))
        if "solver" in params_out:
            params_out["solver"] = solver
        settings = {"method": m.name, "params": params_out, "steps": steps, "guidance": guidance, "model": c.name,
                    "family": c.family, "height": shape[1], "width": shape[2], "negative_prompt": None,
                    "unet_calls": self.denoiser.calls - calls0, "class_labels": labels}
        extras = [{} for _ in range(batch)]
        return MinorityOutput(images=images, latents=z0, trajectories=_per_sample_records(records, batch),
                              settings=settings, extras=extras)


def load_pipeline(model: str | None = None, *, lightning_unet: str | None = None, device="cpu",
                  torch_dtype: torch.dtype = torch.float32):
    """:class:`MinorityPipeline` for text-to-image models, :class:`PixelPipeline` for pixel-space ones."""
    from minority.pipelines.loading import default_model
    from minority.pipelines.text2image import MinorityPipeline

    comps = load_components(model or default_model(), lightning_unet=lightning_unet, device=device, dtype=torch_dtype)
    return PixelPipeline(comps) if comps.family == "pixel" else MinorityPipeline(comps)
