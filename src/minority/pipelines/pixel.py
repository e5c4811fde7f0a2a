"""``PixelPipeline``: pixel-space diffusers ``UNet2DModel`` checkpoints (unconditional or class-conditional)
with the ``ancestral`` (DDPM), ``ddim`` and ``sgms`` samplers on the shared run.

    pipe = PixelPipeline.from_pretrained("google/ddpm-cifar10-32")      # or a folder / "fashion-ddpm"
    out = pipe(num_images=4, method="sgms", scale=1.0, seeds=range(4))
    out = pipe(class_labels=[3, 3, 7], method="ancestral")             # class-conditional models
    out = up(class_labels=[3, 7], low_res=x64, method="ancestral")       # a 64→256 upsampler (x64 in [−1, 1])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from minority.core.conditioning import Conditioning
from minority.errors import MinorityError
from minority.methods import Method
from minority.pipelines.components import Components
from minority.pipelines.loading import default_model, load_components
from minority.pipelines.run import MinorityOutput, Pipeline, RunPlan, Sampling
from minority.pipelines.text2image import MinorityPipeline

UPSAMPLE_HINT = "`minority upsample --images DIR --model FOLDER`"


class PixelPipeline(Pipeline):
    """Samplers for a pixel-space model (:class:`minority.pipelines.components.Components`, ``family="pixel"``)."""

    kind = "pixel"
    default_method = "ancestral"

    def __init__(self, components: Components):
        if components.family != "pixel":
            raise MinorityError("PixelPipeline needs a pixel-space UNet2DModel; use MinorityPipeline for SD models.")
        super().__init__(components)

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

    # -- what differs from a text-to-image model ---------------------------------------------------------
    def default_guidance(self, method: Method, items: list) -> float:
        """The model's guidance for class-conditional sampling with a null class, else 1 (no CFG)."""
        c = self.components
        conditional = any(lab is not None and lab != c.null_class_label for lab in items)
        return c.defaults["guidance"] if conditional and c.null_class_label is not None else 1.0

    def resolve_size(self, sampling: Sampling) -> tuple[int, int]:
        size = int(self.components.unet.config.sample_size)
        for name, v in (("height", sampling.height), ("width", sampling.width)):
            if v is not None and v != size:
                raise MinorityError(f"{name}={v}: this pixel-space model samples at its native {size}×{size} only: "
                                    f"drop --{name}.")
        return size, size

    def check_items(self, items: list, guidance: float) -> None:
        self.labels_tensor(items)
        if guidance != 1.0 and (self.num_classes is None or self.components.null_class_label is None):
            raise MinorityError("Classifier-free guidance needs a class-conditional model with a null class: "
                                "use --guidance 1.")

    def encode(self, plan: RunPlan, items: list, negatives: list[str] | None) -> tuple[Conditioning, Conditioning | None]:
        labels = self.labels_tensor(items)
        cond = Conditioning(class_labels=labels)
        uncond = None
        if plan.guidance != 1.0:
            uncond = Conditioning(class_labels=torch.full_like(labels, self.components.null_class_label))
        return cond, uncond

    def latent_shape(self, plan: RunPlan) -> tuple[int, int, int]:
        return self.denoiser.in_channels, plan.height, plan.width

    def condition_on_images(self, plan: RunPlan, cond: Conditioning, uncond: Conditioning | None,
                            images: torch.Tensor | None) -> tuple[Conditioning, Conditioning | None]:
        """Super-resolution models (guided-diffusion ``SuperResModel``): the low-resolution images ``(B, c, s, s)``
        in [−1, 1], bilinearly upsampled to the sample size (``F.interpolate``, ``align_corners=False``), become
        ``Conditioning.concat`` of both branches; other models refuse images."""
        spec = self.components.low_res_conditioning
        if spec is None:
            return super().condition_on_images(plan, cond, uncond, images)
        if images is None:
            raise MinorityError(f"This is a super-resolution model: it needs low-resolution images ({UPSAMPLE_HINT}).")
        size, ch = int(spec.get("size") or images.shape[-1]), int(spec["channels"])
        if images.dim() != 4 or tuple(images.shape[1:]) != (ch, size, size) or images.shape[0] != len(cond):
            raise MinorityError(f"low_res must have shape ({len(cond)}, {ch}, {size}, {size}) (got {tuple(images.shape)}): "
                                f"this upsampler takes {size}×{size} images.")
        mode = spec.get("interpolation", "bilinear")
        up = torch.nn.functional.interpolate(images.float(), size=(plan.height, plan.width), mode=mode,
                                             **({"align_corners": False} if mode in ("bilinear", "bicubic") else {}))
        up = up.to(self.components.device)
        return cond.replace(concat=up), (None if uncond is None else uncond.replace(concat=up))

    def solver_options(self) -> dict:
        sc = self.components.scheduler.config
        clip = float(getattr(sc, "clip_sample_range", 1.0)) if getattr(sc, "clip_sample", False) else None
        return {"clip_sample": clip, "variance_type": getattr(sc, "variance_type", "fixed_small")}

    def settings_extra(self, items: list, negatives: list[str] | None) -> dict:
        return {"class_labels": list(items), "negative_prompt": None}

    # -- the front door ----------------------------------------------------------------------------------
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
        method: str | Method | None = None,
        progress: bool = False,
        low_res: torch.Tensor | None = None,
        spacing: str = "scheduler",
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
            method: ``ancestral``, ``ddim``, ``sgms`` or ``boost-skip`` (a name with its hyperparameters as keyword
                arguments, or an object).
            low_res: super-resolution models only: the low-resolution images ``(B, 3, s, s)`` in [−1, 1].
            spacing: ``scheduler`` (the scheduler's ``set_timesteps`` grid) or ``adm`` (guided-diffusion's
                ``timestep_respacing``: the SGMS / Boost-and-Skip papers' grid).
        """
        if class_labels is None or isinstance(class_labels, int):
            n = len(seeds) if seeds is not None else (low_res.shape[0] if low_res is not None else 1)
            labels = [class_labels] * int(num_images or n)
        else:
            labels = list(class_labels)
        plan = self.plan(labels, method, params, steps=num_inference_steps, guidance=guidance_scale,
                         output_type=output_type, spacing=spacing)
        return self.run_batch(plan, labels, generator=generator, seeds=seeds, latents=latents, progress=progress,
                              low_res=low_res)


def load_pipeline(model: str | None = None, *, lightning_unet: str | None = None, config: str | None = None,
                  device="cpu", torch_dtype: torch.dtype = torch.float32) -> MinorityPipeline | PixelPipeline:
    """:class:`MinorityPipeline` for text-to-image models, :class:`PixelPipeline` for pixel-space ones (``config``:
    the base model of a single-file ``.safetensors`` ``model``, see :func:`load_components`)."""
    comps = load_components(model or default_model(), lightning_unet=lightning_unet, config=config, device=device,
                            dtype=torch_dtype)
    return PixelPipeline(comps) if comps.family == "pixel" else MinorityPipeline(comps)
