"""The output folder of a run: image and token files with their manifest rows, and what an earlier run left
(kept on ``--resume`` when intact, recovered from the PNGs' rows when the manifest lost them)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from minority.pipelines.run import MinorityOutput
from minority.runs.io import append_jsonl, atomic_write_bytes, atomic_write_json, save_image_atomic
from minority.runs.manifest import (
    clean_temp_files,
    entry_complete,
    manifest_path,
    read_entries,
    remove_shards,
    write_merged,
)
from minority.runs.plan import Plan, negative
from minority.runs.pngmeta import embedded_row
from minority.runs.recover import recover_rows, report_recovery
from minority.runs.sharding import Job, work_units

if TYPE_CHECKING:  # the config module imports this one
    from minority.runs.generate import GenerateConfig

log = logging.getLogger("minority")


def save_token_embeds(extra: dict, path: Path) -> None:
    """Save an image's optimised token in the textual-inversion safetensors layout (atomically)."""
    from safetensors.torch import save

    meta = {"placeholder": extra["placeholder"], "format": "textual-inversion", "producer": "minority"}
    atomic_write_bytes(path, save(extra["token_embeds"], metadata=meta))


def entry_row(cfg: GenerateConfig, plan: Plan, job: Job, settings: dict, seconds: float) -> dict:
    item = plan.items[job.prompt_index]
    meta = dict(cfg.prompt_meta[job.prompt_index]) if cfg.prompt_meta else {}
    st = settings
    return {
        "file": plan.rel(job), "prompt": None if plan.pixel else item, "prompt_index": job.prompt_index,
        "seed": job.seed, **({"class_label": item} if plan.pixel else {}), **meta, "method": st["method"],
        "model": st["model"], "family": st["family"], "steps": st["steps"], "guidance": st["guidance"],
        "negative_prompt": st["negative_prompt"] if plan.pixel else negative(cfg, plan, job),
        "height": st["height"], "width": st["width"], **st["params"],
        **({"model_method_defaults": st["model_method_defaults"]} if st.get("model_method_defaults") else {}),
        "seconds": round(seconds, 4),
    }


def write_outputs(out: Path, manifest: Path, cfg: GenerateConfig, plan: Plan, batch: list[Job], res: MinorityOutput,
                   seconds: float) -> None:
    """Image (and token) files first, renamed into place; then the manifest line, flushed to disk."""
    for k, (job, img) in enumerate(zip(batch, res.images)):
        entry = entry_row(cfg, plan, job, res.settings, seconds)
        if res.trajectories and res.trajectories[k]:
            entry["trajectory"] = res.trajectories[k]
        token = res.extras and res.extras[k].get("token_embeds")
        if token:
            entry["token_file"] = entry["file"][: -len(".png")] + ".safetensors"
            entry["placeholder"] = res.extras[k]["placeholder"]
        save_image_atomic(img, out / entry["file"], text=embedded_row(entry))  # the PNG carries its row
        if token:
            save_token_embeds(res.extras[k], out / entry["token_file"])
        append_jsonl(manifest, entry)


def complete_entries(out: Path, plan: Plan) -> dict:
    """Entries of earlier runs whose files are intact and that belong to this plan (whole prompt groups only,
    for methods whose images of a prompt are made together); rows missing from the manifest are recovered from
    the images (:mod:`minority.runs.recover`)."""
    jobs = set(plan.jobs)
    kept = {}

    def fits(job: Job, e: dict) -> bool:
        return job in jobs and e.get("file") == plan.rel(job) and (
            plan.pixel or e.get("prompt") == plan.items[job.prompt_index])

    for key, e in read_entries(out).items():
        job = Job(*key)
        if fits(job, e) and entry_complete(out, e):
            kept[job] = e
    found = recover_rows(out, ((j, plan.rel(j)) for j in plan.jobs if j not in kept), fits)
    kept.update(found.rows)
    if plan.whole_groups:
        for unit in work_units(plan.jobs, True):
            if not all(j in kept for j in unit):
                for j in unit:
                    kept.pop(j, None)
    report_recovery(sum(j in kept for j in found.rows), found.damaged)
    return kept


def prepare_folder(out: Path, cfg: GenerateConfig, plan: Plan, config: dict) -> None:
    """Main process, before any image: remove temporary files, keep only complete entries of an earlier run
    (``resume``; merged into ``manifest.jsonl``) or none, and write ``config.json``."""
    (out / "images").mkdir(exist_ok=True)
    removed = clean_temp_files(out)
    if removed:
        log.info("Removed %d temporary file(s) left by an interrupted run.", len(removed))
    if cfg.resume:
        kept = complete_entries(out, plan)
        write_merged(out, kept.values())  # the shards' kept lines and the recovered rows
        remove_shards(out)
    else:
        manifest_path(out).unlink(missing_ok=True)
        remove_shards(out)
    atomic_write_json(out / "config.json", config)
