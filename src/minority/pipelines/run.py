"""The one pipeline run behind both front doors (text-to-image :class:`MinorityPipeline`, pixel
:class:`PixelPipeline`).

A run is planned once — :meth:`Pipeline.plan` builds the method object, validates every setting against its
declaration, resolves the defaults (steps, guidance, size, solver, the method's model-dependent fields) in
one place and lets the method check itself against the model — then sampled batch by batch with
:meth:`Pipeline.run_batch`: per-sample generators, the initial latents (each image's first draw), the
conditioning, the method's hooks, the one loop (:func:`minority.core.sampling.sample`), decoding and the
record of what was run. A front door adds only what differs: how items become conditioning, the latent shape
and the default guidance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from minority.core.conditioning import Conditioning
from minority.core.context import RunContext
from minority.core.params import hyperparameter, validate_fields
from minority.core.rng import make_generators, randn_per_sample
from minority.core.sampling import needs_uncond, sample
from minority.core.schedules import SPACINGS, timestep_pairs
from minority.errors import MinorityError
from minority.methods import METHODS, Method, make_method
from minority.pipelines.components import Components

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass(frozen=True)
class Sampling:
    """The run's own settings, declared once (None = the model's default); validated on creation."""

    steps: int | None = hyperparameter(None, "sampling steps T", low=1)
    guidance: float | None = hyperparameter(None, "classifier-free guidance w (1 = none; cfgpp: λ in [0, 1])", low=0.0)
    height: int | None = hyperparameter(None, "image height in pixels", low=1)
    width: int | None = hyperparameter(None, "image width in pixels", low=1)
    spacing: str = hyperparameter("scheduler", "timestep grid: scheduler (its set_timesteps) or adm "
                                  "(guided-diffusion's timestep_respacing, and its DDIM: ε from the clipped x0; pixel "
                                  "models)", choices=SPACINGS)

    def __post_init__(self) -> None:
        validate_fields(self)


@dataclass(frozen=True)
class RunPlan:
    """A planned run: the resolved method and settings (recorded with every image)."""

    method: Method
    steps: int
    guidance: float
    height: int
    width: int
    output_type: str
    pairs: tuple[tuple[int, int], ...]
    spacing: str = "scheduler"
    model_method_defaults: dict = field(default_factory=dict)  # hyperparameters the model folder supplied

    @property
    def solver(self) -> str:
        return self.method.solver_name()


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


def per_sample_records(records: list[dict], batch: int) -> list[dict]:
    """Per-step records (values: per-sample lists of length B) -> per-sample ``{"step": [i, ...], key: [...]}``."""
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
    from PIL import Image  # noqa: PLC0415  (Pillow only for PIL output)

    u8 = (arr * 255).round().astype(np.uint8)
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in u8]


def generators_for(batch: int, generator, seeds) -> tuple[list[torch.Generator], list[int | None]]:
    """One CPU generator per image (SPEC §3.4): from ``seeds``, from given generators, or seeds 0..B−1."""
    if seeds is not None:
        seeds = [int(s) for s in seeds]
        if len(seeds) != batch:
            raise MinorityError(f"Got {len(seeds)} seeds for {batch} images: give one seed per image.")
        return make_generators(seeds), seeds
    if generator is None:
        return make_generators(range(batch)), list(range(batch))
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


class Pipeline:
    """The shared run; subclasses are the front doors (their ``kind`` is ``"text"`` or ``"pixel"``)."""

    kind = "text"
    default_method = "ddim"

    def __init__(self, components: Components):
        self.components = components
        self.denoiser = components.denoiser()
        self._pairs: dict[int, tuple] = {}

    def to(self, device=None, dtype=None):
        self.components.to(device=device, dtype=dtype)
        return self

    # -- front-door specifics --------------------------------------------------------------------------
    def default_guidance(self, method: Method, items: list) -> float:
        raise NotImplementedError

    def resolve_size(self, sampling: Sampling) -> tuple[int, int]:
        raise NotImplementedError

    def check_method(self, method: Method, guidance: float) -> None:
        """Refuse a method the model family cannot run."""

    def check_items(self, items: list, guidance: float) -> None:
        """Validate the items (prompts / class labels) against the model."""

    def encode(self, plan: RunPlan, items: list, negatives: list[str] | None) -> tuple[Conditioning, Conditioning | None]:
        raise NotImplementedError

    def latent_shape(self, plan: RunPlan) -> tuple[int, int, int]:
        raise NotImplementedError

    def solver_options(self) -> dict:
        """Scheduler options of the solvers (``clip_sample``, ``variance_type``)."""
        return {}

    def condition_on_images(self, plan: RunPlan, cond: Conditioning, uncond: Conditioning | None,
                            images: torch.Tensor | None) -> tuple[Conditioning, Conditioning | None]:
        """Add conditioning images (a super-resolution model's low-resolution inputs) to both branches; models
        that take none refuse them."""
        if images is not None:
            raise MinorityError("This model takes no conditioning images (low_res): drop them.")
        return cond, uncond

    def settings_extra(self, items: list, negatives: list[str] | None) -> dict:
        return {}

    # -- the run ---------------------------------------------------------------------------------------
    def pairs(self, steps: int, spacing: str = "scheduler") -> tuple[tuple[int, int], ...]:
        """The (t, t_next) grid for ``steps`` and ``spacing`` (computed once per setting)."""
        if (steps, spacing) not in self._pairs:
            self._pairs[steps, spacing] = tuple(timestep_pairs(self.components.scheduler, steps, spacing))
        return self._pairs[steps, spacing]

    def grid(self, steps: int, height: int, width: int, spacing: str = "scheduler") -> tuple[tuple[int, int], ...]:
        """The (t, t_next) grid of a run (flow families: it depends on the image size)."""
        return self.pairs(steps, spacing)

    def plan(self, items: list, method: str | Method | None = None, params: dict | None = None, *,
             steps: int | None = None, guidance: float | None = None, height: int | None = None,
             width: int | None = None, output_type: str = "pil", group_ids: list[int] | None = None,
             spacing: str = "scheduler", given: Sequence[str] | None = None) -> RunPlan:
        """Check every input and resolve every default once for a run over ``items`` (raises MinorityError).

        The model folder's per-method defaults (``minority_defaults.methods.<method>`` in ``model_index.json``)
        fill the hyperparameters the user did not set: those not in ``params`` when ``method`` is a name, those not
        in ``given`` when it is a method object with ``given`` (an object alone is used as it is)."""
        c = self.components
        m = make_method(method or self.default_method, params)
        m, applied = self.model_method_defaults(m, explicit=None if isinstance(method, Method) and given is None
                                                else {*(params or {}), *(given or ())})
        if self.kind not in m.kinds:
            where = "text-to-image" if self.kind == "pixel" else "pixel-space"
            raise MinorityError(f"Method {m.name!r} is for {where} models only; this model takes "
                                f"{', '.join(n for n, k in _kinds().items() if self.kind in k)}.")
        s = Sampling(steps, guidance, height, width, spacing)  # declarations: finite, in range
        if spacing == "adm" and self.kind != "pixel":
            raise MinorityError("--spacing adm is guided-diffusion's respacing for pixel models: drop it here.")
        if output_type not in OUTPUT_TYPES:
            raise MinorityError(f"output_type must be pil, np, pt or latent (got {output_type!r}).")
        steps = int(s.steps if s.steps is not None else c.defaults["steps"])
        guidance = float(s.guidance if s.guidance is not None else self.default_guidance(m, items))
        height, width = self.resolve_size(s)
        self.check_items(items, guidance)
        self.check_method(m, guidance)
        plan = RunPlan(m.resolved(c.family), steps, guidance, height, width, output_type,
                       self.grid(steps, height, width, spacing), spacing, applied)
        m.check(self.context(plan, items, [None] * len(items), group_ids))
        return plan

    def model_method_defaults(self, m: Method, explicit: set[str] | None) -> tuple[Method, dict]:
        """``m`` with the model's per-method defaults for the hyperparameters not in ``explicit`` (None: none
        applied), and the defaults applied."""
        table = ((self.components.model_defaults.get("methods") or {}).get(m.name) or {}) if explicit is not None else {}
        applied = {k: v for k, v in table.items() if k not in explicit}
        if not applied:
            return m, {}
        try:
            return make_method(m, applied), applied
        except MinorityError as err:
            raise MinorityError(f"The model {self.components.name}'s minority_defaults for {m.name} (model_index.json) "
                                f"are invalid: {err}") from err

    def context(self, plan: RunPlan, items: list, seeds: list, group_ids: list[int] | None = None,
                **kw) -> RunContext:
        c = self.components
        return RunContext(family=c.family, latent=c.is_latent, prompts=[str(x) for x in items], seeds=seeds,
                          group_ids=group_ids or list(range(len(items))), steps=plan.steps, guidance=plan.guidance,
                          pairs=plan.pairs, prompt_encoder=getattr(self, "prompt_encoder", None), unet=c.unet,
                          scheduler=c.scheduler, spacing=plan.spacing, **kw)

    def run_batch(self, plan: RunPlan, items: list, *, negatives: list[str] | None = None,
                  group_ids: list[int] | None = None, generator=None, seeds: Sequence[int] | None = None,
                  latents: torch.Tensor | None = None, progress: bool = False,
                  low_res: torch.Tensor | None = None) -> MinorityOutput:
        """Sample one batch of a planned run: ``items`` (B prompts / class labels) with per-image seeds;
        ``low_res`` ``(B, c, h, w)`` in [−1, 1]: the conditioning images of super-resolution models."""
        c, batch = self.components, len(items)
        gens, seed_list = generators_for(batch, generator, seeds)
        cond, uncond = self.condition_on_images(plan, *self.encode(plan, items, negatives), low_res)
        shape = self.latent_shape(plan)
        if latents is None:  # SPEC §3.4: each image's first draw; the method's draws follow
            latents = randn_per_sample(gens, shape, device=c.device) * float(getattr(c.scheduler, "init_noise_sigma", 1.0))
        elif tuple(latents.shape) != (batch, *shape):
            raise MinorityError(f"latents must have shape {(batch, *shape)} (got {tuple(latents.shape)}).")
        run = self.context(plan, items, seed_list, group_ids, cond=cond, uncond=uncond, generators=gens)
        hooks = plan.method.hooks(run)
        calls0, evals0 = self.denoiser.calls, self.denoiser.samples_evaluated
        bar = _progress_bar(plan, progress)
        boost, start = plan.method.start(plan.steps)  # (1, 0) but for Boost-and-Skip: γ z_T from grid index Δt
        z = latents.to(c.device, torch.float32)
        z0, records = sample(self.denoiser, z if boost == 1.0 else boost * z, cond, uncond, plan.pairs,
                             plan.guidance, gens, solver=plan.solver, hooks=hooks, progress=bar, start=start,
                             eps_from_x0=plan.spacing == "adm", **self.solver_options())  # adm: guided-diffusion's DDIM
        if bar is not None:
            bar.close()
        with torch.no_grad():
            images = z0 if plan.output_type == "latent" else to_output(self.denoiser.decode(z0), plan.output_type)
        settings = {"method": plan.method.name, "params": plan.method.to_dict(), "steps": plan.steps,
                    "guidance": plan.guidance, **({"spacing": plan.spacing} if plan.spacing != "scheduler" else {}),
                    "height": plan.height, "width": plan.width,
                    "negative_prompt": negatives[0] if negatives else None, "model": c.name, "family": c.family,
                    **({"model_method_defaults": plan.model_method_defaults} if plan.model_method_defaults else {}),
                    "unet_calls": self.denoiser.calls - calls0,
                    "unet_sample_evals": self.denoiser.samples_evaluated - evals0, **self.settings_extra(items, negatives)}
        extras: list[dict] = [{} for _ in range(batch)]
        for h in hooks:
            for b, r in enumerate(getattr(h, "results", lambda: [{}] * batch)()):
                extras[b].update(r)
        return MinorityOutput(images=images, latents=z0, trajectories=per_sample_records(records, batch),
                              settings=settings, extras=extras)


class _Bar:
    def __init__(self, total: int, desc: str):
        from tqdm.auto import tqdm  # noqa: PLC0415  (progress bars only when asked for)

        self.bar = tqdm(total=total, desc=desc, leave=False)

    def __call__(self, i: int) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _progress_bar(plan: RunPlan, enabled: bool) -> _Bar | None:
    return _Bar(plan.steps - plan.method.start(plan.steps)[1], plan.method.name) if enabled else None  # S − Δt


def _kinds() -> dict[str, tuple[str, ...]]:
    return {n: m.kinds for n, m in sorted(METHODS.items())}


def wants_uncond(plan: RunPlan) -> bool:
    """Whether the run evaluates the unconditional branch."""
    return needs_uncond(plan.solver, plan.guidance)
