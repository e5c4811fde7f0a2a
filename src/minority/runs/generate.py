"""Batch generation to a folder: ``images/<prompt_index:05d>_<seed:06d>.png``, ``manifest.jsonl``, ``config.json``.

``generate(...)`` is the Python twin of ``minority generate``; both build a frozen :class:`GenerateConfig` and
write it as ``config.json`` beside the outputs. Runs are crash-safe and resumable (each image is renamed into
place before its manifest line is appended; ``resume=True`` redoes exactly the missing or damaged images) and
shard over processes started by ``accelerate launch`` (:mod:`minority.runs.sharding`, :mod:`minority.runs.distributed`):
process r writes ``manifest.rank{r}.jsonl``, the main process merges the shards into ``manifest.jsonl``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minority.core.rng import use_deterministic_kernels
from minority.errors import MinorityError
from minority.methods import Method, make_method
from minority.pipelines.pixel import load_pipeline
from minority.pipelines.run import Sampling
from minority.runs.distributed import ProcessContext, process_context, resolve_device
from minority.runs.folder import prepare_folder, save_token_embeds, write_outputs
from minority.runs.io import (
    OutputWriteError,
    ensure_writable_dir,
)
from minority.runs.lock import lock_for_process
from minority.runs.manifest import (
    has_results,
    manifest_path,
    merge,
    read_entries,
    shard_path,
)
from minority.runs.plan import Plan, call_batch, image_name, make_plan, negative
from minority.runs.progress import GenerateResult, OverallProgress, ProcessLog
from minority.runs.resume import check_compatible, read_config
from minority.runs.seeds import check_run_size
from minority.runs.sharding import Job, make_batches, shard_units, work_units
from minority.runs.signals import graceful_stop

log = logging.getLogger("minority")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

__all__ = ["DTYPES", "GenerateConfig", "GenerateResult", "GenerationInterrupted", "generate", "generate_to_folder",
           "image_name", "preflight", "resolve_device", "run_generate", "save_token_embeds"]


@dataclass(frozen=True)
class GenerateConfig:
    """Everything that defines a ``minority generate`` run (written as ``config.json``).

    Per-item overrides (from a JSON Lines prompts file) are tuples aligned with the items (``prompts``, or
    ``class_labels`` for pixel-space models), empty when unused: ``prompt_seeds`` (that item's one seed, or
    None = ``seeds``), ``negative_prompts`` (None = ``negative_prompt``), ``prompt_meta`` (extra manifest fields).
    ``resume`` continues the run in ``out`` (the earlier ``config.json`` must match); ``prompts_source``
    records where the prompts came from (not compared on resume).
    """
    prompts: tuple[str, ...]
    model: str | None = None
    method: str | Method = "ddim"
    seeds: tuple[int, ...] = (0,)
    steps: int | None = None
    spacing: str = "scheduler"
    guidance: float | None = None
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    batch_size: int = 4
    device: str = "auto"
    dtype: str = "float32"
    out: str = "outputs/generate"
    lightning_unet: str | None = None
    model_config: str | None = None
    overwrite: bool = False
    params: dict = field(default_factory=dict)
    class_labels: tuple = ()
    resume: bool = False
    prompt_seeds: tuple = ()
    negative_prompts: tuple = ()
    prompt_meta: tuple = ()
    prompts_source: dict = field(default_factory=dict)
    deterministic: bool = False
    given_params: tuple[str, ...] | None = None
    preset: str | None = None  # the --preset the settings came from (recorded only)

    def __post_init__(self) -> None:
        # The method object, built and validated once (names, types, ranges, NaN): a name plus ``params`` (the
        # 0.1 API) or a method object. ``params`` then lists all its hyperparameters; ``given_params`` the ones
        # the user set (the model folder's per-method defaults fill the others; None with an object: none).
        if isinstance(self.method, str) and self.given_params is None:
            object.__setattr__(self, "given_params", tuple(sorted(self.params)))
        method = make_method(self.method, self.params)
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "params", method.to_dict())

    def to_json(self) -> dict:
        """The run's settings as written to ``config.json`` (the method by name, its hyperparameters in ``params``)."""
        return {**dataclasses.asdict(self), "method": self.method.name}

    def validate(self) -> None:
        """Check the settings that need no model (raises :class:`MinorityError`)."""
        if any(not p.strip() for p in self.prompts):
            raise MinorityError("A prompt is empty: remove it, or use --guidance 1 with a blank prompt on purpose.")
        Sampling(self.steps, self.guidance, self.height, self.width, self.spacing)  # the declarations: finite, in range
        if self.batch_size < 1:
            raise MinorityError(f"--batch-size must be >= 1 (got {self.batch_size}).")
        if self.dtype not in DTYPES:
            raise MinorityError(f"--dtype must be one of {', '.join(DTYPES)} (got {self.dtype!r}).")
        if self.resume and self.overwrite:
            raise MinorityError("--resume continues the run in --out and --overwrite replaces it: pass only one.")
        n_items = len(self.prompts) or len(self.class_labels)
        for name in ("prompt_seeds", "negative_prompts", "prompt_meta"):
            if getattr(self, name) and len(getattr(self, name)) != n_items:
                raise MinorityError(f"{name} has {len(getattr(self, name))} entries for {n_items} prompts: give one per prompt.")


# --------------------------------------------------------------------------------------------------
class GenerationInterrupted(MinorityError):
    """The run stopped early (Ctrl-C / SIGTERM); every image written so far is complete. ``exit_code``:
    128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""

    exit_code = 130


def preflight(cfg: GenerateConfig, create: bool = True) -> None:
    """The checks that need no model: settings, the output folder (created when ``create``) and an earlier run
    in it (which needs ``resume`` or ``overwrite``). Raises :class:`MinorityError`."""
    cfg.validate()
    check_run_size(len(cfg.prompts) or len(cfg.class_labels) or 1, cfg.seeds, cfg.prompt_seeds)
    out = Path(cfg.out)
    if create:
        ensure_writable_dir(out)
    if has_results(out) and not (cfg.overwrite or cfg.resume):
        raise MinorityError(f"{out} already holds a generation (manifest.jsonl): pass --resume to finish it, "
                            "--overwrite to replace it, or choose another --out.")


def _resume_hint(command: str | None) -> str:
    return command or "call generate(...) again with resume=True"


def generate_to_folder(cfg: GenerateConfig, pipe=None, progress: bool = True,
                       resume_command: str | None = None) -> GenerateResult:
    """Generate every (prompt, seed) image of ``cfg`` into ``cfg.out`` (this process's share when launched by
    ``accelerate launch``); returns a :class:`GenerateResult` (main process: totals of all processes).

    Args:
        cfg: the run.
        pipe: an already loaded pipeline (default: load ``cfg.model`` on this process's device).
        progress: draw the overall progress bar (main process).
        resume_command: the command that finishes an interrupted run (shown in messages).
    """
    t_start = time.perf_counter()
    if cfg.deterministic:
        use_deterministic_kernels()
    ctx: ProcessContext = process_context(cfg.device)
    preflight(cfg, create=ctx.is_main)
    lock = lock_for_process(cfg.out, ctx.is_main)  # one writer per --out (refused here, before the model loads)
    try:
        return _generate_locked(cfg, ctx, pipe, progress, resume_command, t_start)
    finally:
        lock.release()


def _generate_locked(cfg: GenerateConfig, ctx: ProcessContext, pipe, progress: bool, resume_command: str | None,
                     t_start: float) -> GenerateResult:
    out = Path(cfg.out)
    if pipe is None:
        pipe = load_pipeline(cfg.model, lightning_unet=cfg.lightning_unet, config=cfg.model_config, device=ctx.device,
                             torch_dtype=DTYPES[cfg.dtype])
    plan = make_plan(cfg, pipe)
    config = {**cfg.to_json(), "model": cfg.model or pipe.components.name, "resolved_device": ctx.device,
              "resolved": plan.resolved, "processes": ctx.world}
    if cfg.resume and (old := read_config(out)) is not None:
        check_compatible(old, config, out)
    ctx.barrier()
    if ctx.is_main:
        prepare_folder(out, cfg, plan, config)
    ctx.barrier()
    complete = {Job(*k) for k in read_entries(out)}  # the consolidated manifest (resume) or nothing
    done = len(complete)
    remaining = [j for j in plan.jobs if j not in complete]
    mine = shard_units(work_units(remaining, plan.whole_groups), ctx.rank, ctx.world)
    batches = make_batches(mine, cfg.batch_size, plan.whole_groups, key=lambda j: negative(cfg, plan, j) is None)
    manifest = manifest_path(out) if ctx.world == 1 else shard_path(out, ctx.rank)
    plog = ProcessLog(out, ctx.rank)
    plog(f"start: {sum(len(b) for b in batches)} of {len(remaining)} remaining images ({len(plan.jobs)} in all, "
         f"{done} complete) in {len(batches)} batches on {ctx.device}, {ctx.world} process(es)")
    others = [shard_path(out, r) for r in range(1, ctx.world)]
    bar = OverallProgress(len(plan.jobs), done, others, enabled=progress and ctx.is_main, desc=cfg.method.name)
    result = GenerateResult(out=out, total=len(plan.jobs), skipped=done, generated=0, processes=ctx.world,
                            rank=ctx.rank)
    hint = _resume_hint(resume_command)
    _sample_batches(pipe, cfg, plan, batches, manifest, bar, plog, result, hint)
    plog(f"done: {result.generated} images in {result.generate_seconds:.1f} s generating, "
         f"{result.write_seconds:.2f} s writing")
    ctx.barrier()
    bar.close()  # after the other processes finished: the bar ends at everyone's total
    if ctx.is_main:
        wanted = set(plan.jobs)
        merged = merge(out, keep=lambda k, e: Job(*k) in wanted)
        result.generated = len(merged) - done
    ctx.close()
    result.seconds = time.perf_counter() - t_start
    if ctx.is_main:
        log.debug("%s (main process: %.1f s generating, %.2f s writing files)", result.summary(),
                  result.generate_seconds, result.write_seconds)
    return result


def _sample_batches(pipe, cfg: GenerateConfig, plan: Plan, batches: list[list[Job]], manifest: Path,
                    bar: OverallProgress, plog: ProcessLog, result: GenerateResult, hint: str) -> None:
    """Sample and write this process's batches; stops cleanly between batches on Ctrl-C / SIGTERM (raises
    :class:`GenerationInterrupted`) and names the resume command when a write fails."""
    out = Path(cfg.out)
    stop, finished = None, False
    try:
        with graceful_stop(announce=result.rank == 0) as stop:
            for i, batch in enumerate(batches):
                if stop.requested:
                    result.interrupted = True
                    break
                t0 = time.perf_counter()
                res = call_batch(pipe, cfg, plan, batch)
                t1 = time.perf_counter()
                write_outputs(out, manifest, cfg, plan, batch, res, (t1 - t0) / len(batch))
                t2 = time.perf_counter()
                result.generate_seconds += t1 - t0
                result.write_seconds += t2 - t1
                result.generated += len(batch)
                bar.advance(len(batch))
                plog(f"batch {i + 1}/{len(batches)}: {len(batch)} images in {t1 - t0:.2f} s, "
                     f"written in {t2 - t1:.3f} s")
            finished = not result.interrupted
    except KeyboardInterrupt:
        result.interrupted = True
    except OutputWriteError as err:
        plog(f"error: {err}")
        raise OutputWriteError(f"{err} Then finish the run with: {hint}") from err
    finally:
        if not finished:
            bar.close()
    if result.interrupted:
        plog(f"interrupted after {result.generated} images")
        complete = len(read_entries(out))  # every process's lines so far
        err = GenerationInterrupted(
            f"Interrupted: {complete} of {len(plan.jobs)} images are complete in {out}; finish with: {hint}")
        err.exit_code = stop.exit_code if stop is not None else 130
        raise err


def run_generate(cfg: GenerateConfig, pipe=None, progress: bool = True) -> Path:
    """Generate every (prompt, seed) image of ``cfg`` into ``cfg.out``; returns the output folder.

    Text-to-image models take ``cfg.prompts``; pixel-space models take ``cfg.class_labels`` (empty =
    unconditional) and name images ``<class_label:05d>_<seed:06d>.png``.
    """
    result = generate_to_folder(cfg, pipe=pipe, progress=progress)
    if result.rank == 0:
        log.info(result.summary())
    return result.out


def generate(prompts, out: str = "outputs/generate", method: str | Method = "ddim", seeds=(0,), **kwargs) -> Path:
    """Python API twin of ``minority generate``: same names as the CLI flags (``steps``, ``guidance``,
    ``resume``, ...); the method is a name with its hyperparameters in ``params={...}``, or a method object
    (``method=MinorityPrompt(lr=0.02)``). Returns the output folder."""
    prompts = (prompts,) if isinstance(prompts, str) else tuple(prompts)
    pipe = kwargs.pop("pipe", None)
    cfg = GenerateConfig(prompts=prompts, out=str(out), method=method, seeds=tuple(int(s) for s in seeds), **kwargs)
    return run_generate(cfg, pipe=pipe, progress=False)

