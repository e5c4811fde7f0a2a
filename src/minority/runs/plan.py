"""The plan of a ``minority generate`` run: its items (prompts or class labels), its (prompt, seed) jobs, and the
pipeline's :class:`~minority.pipelines.run.RunPlan` — every input checked against the loaded model once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from minority.errors import MinorityError
from minority.pipelines.pixel import PixelPipeline
from minority.pipelines.run import MinorityOutput, RunPlan
from minority.runs.sharding import Job, plan_jobs, work_units

if TYPE_CHECKING:  # the config module imports this one
    from minority.runs.generate import GenerateConfig


def image_name(prompt_index: int, seed: int) -> str:
    """``<prompt_index:05d>_<seed:06d>.png``."""
    return f"{prompt_index:05d}_{seed:06d}.png"


@dataclass
class Plan:
    """The resolved run: items, jobs and the settings that define every image."""
    items: list
    pixel: bool
    whole_groups: bool
    jobs: list[Job]
    resolved: dict
    default_negative: str | None
    run: RunPlan

    def rel(self, job: Job) -> str:
        """``images/<index>_<seed>.png`` (pixel models: the class label replaces the index, as before)."""
        label = self.items[job.prompt_index]
        if self.pixel and label is not None:
            return f"images/{image_name(label, job.seed)}"
        return f"images/{image_name(job.prompt_index, job.seed)}"


def negative(cfg: GenerateConfig, plan: Plan, job: Job) -> str | None:
    """The negative prompt of a job: its prompt's own, else the run's, else the method's default (or None)."""
    own = cfg.negative_prompts[job.prompt_index] if cfg.negative_prompts else None
    return own if own is not None else plan.default_negative


def make_plan(cfg: GenerateConfig, pipe) -> Plan:
    """Items, jobs and resolved settings; validates every input against the loaded model once for the whole run
    (no files touched)."""

    method = cfg.method
    pixel = isinstance(pipe, PixelPipeline)
    if pixel:
        if cfg.prompts:
            raise MinorityError("This is a pixel-space model: it takes --class-label values, not prompts.")
        items: list = list(cfg.class_labels) or [None]
    else:
        if cfg.class_labels:
            raise MinorityError("--class-label is for pixel-space models; text-to-image models take prompts.")
        if not cfg.prompts:
            raise MinorityError("No prompt given: pass prompts as arguments or with --prompts-file.")
        items = list(cfg.prompts)
    whole = method.whole_prompt_batches
    jobs = plan_jobs(len(items), cfg.seeds, cfg.prompt_seeds)
    first_batch = work_units(jobs, True)[0] if whole else jobs[: cfg.batch_size]
    run = pipe.plan([items[j.prompt_index] for j in jobs], cfg.method, steps=cfg.steps,
                    guidance=cfg.guidance, height=None if pixel else cfg.height, width=None if pixel else cfg.width,
                    group_ids=[j.prompt_index for j in jobs] if whole else None, spacing=cfg.spacing,
                    given=cfg.given_params)
    if whole:  # objectives over a prompt's images: check the first batch as it will be sampled
        run.method.check(pipe.context(run, [items[j.prompt_index] for j in first_batch], [j.seed for j in first_batch],
                                      [j.prompt_index for j in first_batch]))
    size = {} if pixel else {"height": run.height, "width": run.width}
    plan = Plan(items=items, pixel=pixel, whole_groups=whole, jobs=jobs,
                 resolved={"params": run.method.to_dict(), "steps": run.steps, "guidance": run.guidance, **size,
                           **({"model_method_defaults": run.model_method_defaults} if run.model_method_defaults else {})},
                 default_negative=None if pixel else (cfg.negative_prompt or method.default_negative_prompt), run=run)
    names = [plan.rel(j) for j in jobs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise MinorityError(f"Two images would both be written to {dup}: each (class label, seed) pair must appear once.")
    return plan


def call_batch(pipe, cfg: GenerateConfig, plan: Plan, batch: list[Job]) -> MinorityOutput:
    """One batch of the planned run (items: prompts or class labels)."""
    items = [plan.items[j.prompt_index] for j in batch]
    negs = None if plan.pixel else [negative(cfg, plan, j) for j in batch]
    if negs is not None and negs[0] is None:
        negs = None
    return pipe.run_batch(plan.run, items, negatives=negs, group_ids=[j.prompt_index for j in batch],
                          seeds=[j.seed for j in batch])
