"""Batch generation to a folder: ``images/<prompt_index:05d>_<seed:06d>.png``, ``manifest.jsonl``, ``config.json``.

``generate(...)`` is the Python twin of ``minority generate``; both build a frozen
:class:`GenerateConfig` and write it as ``config.json`` beside the outputs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import MinorityError
from .io import append_jsonl, atomic_write_json, ensure_writable_dir, read_jsonl, save_image_atomic
from .methods import get_method, make_config

log = logging.getLogger("minority")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class GenerateConfig:
    """Everything that defines a ``minority generate`` run (written as ``config.json``)."""

    prompts: tuple[str, ...]
    model: str | None = None
    method: str = "ddim"
    seeds: tuple[int, ...] = (0,)
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    batch_size: int = 4
    device: str = "auto"
    dtype: str = "float32"
    out: str = "outputs/generate"
    lightning_unet: str | None = None
    overwrite: bool = False
    params: dict = field(default_factory=dict)
    class_labels: tuple = ()

    def validate(self) -> None:
        if any(not p.strip() for p in self.prompts):
            raise MinorityError("A prompt is empty: remove it, or use --guidance 1 with a blank prompt on purpose.")
        if self.steps is not None and self.steps < 1:
            raise MinorityError(f"--steps must be >= 1 (got {self.steps}).")
        if self.guidance is not None and self.guidance < 0:
            raise MinorityError(f"--guidance must be >= 0 (got {self.guidance}).")
        if self.batch_size < 1:
            raise MinorityError(f"--batch-size must be >= 1 (got {self.batch_size}).")
        if self.dtype not in DTYPES:
            raise MinorityError(f"--dtype must be one of {', '.join(DTYPES)} (got {self.dtype!r}).")
        m = get_method(self.method)
        make_config(m, self.params)  # unknown parameter names / bad choices fail before any work


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; checks that an explicit CUDA device exists."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MinorityError(f"--device {device} asked for CUDA, but no CUDA device is available: use --device cpu.")
    return device


def image_name(prompt_index: int, seed: int) -> str:
    return f"{prompt_index:05d}_{seed:06d}.png"


def _batches(jobs: list[tuple[int, int]], batch_size: int, whole_groups: bool) -> list[list[tuple[int, int]]]:
    """Chunk (prompt_index, seed) jobs; with ``whole_groups`` a batch never splits or mixes prompts."""
    if not whole_groups:
        return [jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)]
    groups: dict[int, list] = {}
    for j in jobs:
        groups.setdefault(j[0], []).append(j)
    return list(groups.values())


def save_token_embeds(extra: dict, path: Path) -> None:
    """Save an image's optimised token in the textual-inversion safetensors layout (atomically)."""
    from safetensors.torch import save

    meta = {"placeholder": extra["placeholder"], "format": "textual-inversion", "producer": "minority"}
    from .io import atomic_write_bytes

    atomic_write_bytes(path, save(extra["token_embeds"], metadata=meta))


def _call(pipe, cfg: GenerateConfig, items: list, batch: list[tuple[int, int]]):
    """One pipeline call for a batch of (item index, seed) jobs (items: prompts or class labels)."""
    from .pixel import PixelPipeline

    common = dict(num_inference_steps=cfg.steps, guidance_scale=cfg.guidance, seeds=[s for _, s in batch],
                  method=cfg.method, output_type="pil", **cfg.params)
    if isinstance(pipe, PixelPipeline):
        return pipe(class_labels=[items[i] for i, _ in batch], **common)
    return pipe([items[i] for i, _ in batch], negative_prompt=cfg.negative_prompt, height=cfg.height,
                width=cfg.width, **common)


def run_generate(cfg: GenerateConfig, pipe=None, progress: bool = True) -> Path:
    """Generate every (prompt, seed) image of ``cfg`` into ``cfg.out``; returns the output folder.

    Text-to-image models take ``cfg.prompts``; pixel-space models take ``cfg.class_labels`` (empty =
    unconditional) and name images ``<class_label:05d>_<seed:06d>.png``.
    """
    from .pixel import PixelPipeline, load_pipeline

    cfg.validate()
    out = ensure_writable_dir(cfg.out)
    manifest = out / "manifest.jsonl"
    if read_jsonl(manifest) and not cfg.overwrite:
        raise MinorityError(f"{out} already holds a generation (manifest.jsonl): choose another --out or pass --overwrite.")
    if cfg.overwrite:
        manifest.unlink(missing_ok=True)
    (out / "images").mkdir(exist_ok=True)
    device = resolve_device(cfg.device)
    if pipe is None:
        pipe = load_pipeline(cfg.model, lightning_unet=cfg.lightning_unet, device=device, torch_dtype=DTYPES[cfg.dtype])
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
    method = get_method(cfg.method)
    atomic_write_json(out / "config.json", {**dataclasses.asdict(cfg), "model": cfg.model or pipe.components.name,
                                             "resolved_device": device})
    jobs = [(pi, s) for pi in range(len(items)) for s in cfg.seeds]
    batches = _batches(jobs, cfg.batch_size, getattr(method, "whole_prompt_batches", False))
    first = [items[pi] for pi, _ in batches[0]]
    if pixel:
        pipe.check_inputs(first, cfg.steps, cfg.guidance, cfg.method, dict(cfg.params))
    else:
        pipe.check_inputs(first, cfg.steps, cfg.guidance, cfg.height, cfg.width, cfg.method, dict(cfg.params))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=f"{cfg.method}", unit="img")
    t_start = time.perf_counter()
    try:
        for batch in batches:
            t0 = time.perf_counter()
            res = _call(pipe, cfg, items, batch)
            secs = (time.perf_counter() - t0) / len(batch)
            st = res.settings
            for k, ((pi, seed), img) in enumerate(zip(batch, res.images)):
                label = items[pi] if pixel else None
                rel = f"images/{image_name(label if label is not None else pi, seed) if pixel else image_name(pi, seed)}"
                save_image_atomic(img, out / rel)
                entry = {
                    "file": rel, "prompt": None if pixel else items[pi], "prompt_index": pi, "seed": seed,
                    **({"class_label": label} if pixel else {}), "method": st["method"],
                    "model": st["model"], "family": st["family"], "steps": st["steps"], "guidance": st["guidance"],
                    "negative_prompt": st["negative_prompt"], "height": st["height"], "width": st["width"],
                    **st["params"], "seconds": round(secs, 4),
                }
                if res.trajectories and res.trajectories[k]:
                    entry["trajectory"] = res.trajectories[k]
                if res.extras and res.extras[k].get("token_embeds"):
                    token_rel = rel[: -len(".png")] + ".safetensors"
                    save_token_embeds(res.extras[k], out / token_rel)
                    entry["token_file"], entry["placeholder"] = token_rel, res.extras[k]["placeholder"]
                append_jsonl(manifest, entry)
                if bar:
                    bar.update(1)
    except KeyboardInterrupt:
        done = len(read_jsonl(manifest))
        raise MinorityError(f"Interrupted after {done} of {len(jobs)} images; the {done} written in {out} are complete.") from None
    finally:
        if bar:
            bar.close()
    log.info("Wrote %d images to %s in %.1f s", len(jobs), out, time.perf_counter() - t_start)
    return out


def generate(prompts, out: str = "outputs/generate", method: str = "ddim", seeds=(0,), **kwargs) -> Path:
    """Python API twin of ``minority generate``: same names as the CLI flags (``steps``, ``guidance``, ...);
    method hyperparameters go in ``params={...}``. Returns the output folder."""
    prompts = (prompts,) if isinstance(prompts, str) else tuple(prompts)
    pipe = kwargs.pop("pipe", None)
    cfg = GenerateConfig(prompts=prompts, out=str(out), method=method, seeds=tuple(int(s) for s in seeds), **kwargs)
    return run_generate(cfg, pipe=pipe, progress=False)
