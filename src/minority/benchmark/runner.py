"""``benchmark(cfg)``: run a protocol and write its outputs.

``OUT/results.csv`` (one row per arm; perf: per arm and backbone), ``OUT/results.md`` (the paper-style table
with 95% CIs, notes, commands and versions), PNG plots and labelled grids, ``OUT/benchmark.json`` (the
resolved plan, commands, versions, timings) and ``OUT/runs/`` (the generations and their evaluations).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import shutil
import time
from pathlib import Path

import torch

from minority.benchmark import plots
from minority.benchmark.config import BenchmarkConfig, Plan, resolve
from minority.benchmark.confound import detail_control, detail_markdown
from minority.benchmark.grids import comparison_grid
from minority.benchmark.perf import run_perf, slug
from minority.benchmark.protocols import Protocol
from minority.benchmark.provenance import invoked_command, setting_word, shell_join, versions
from minority.benchmark.quality import per_image_values, run_quality
from minority.benchmark.tables import (
    HEADERS,
    format_value,
    markdown_table,
    metric_columns,
    metrics_markdown,
    read_csv,
    write_csv,
)
from minority.errors import MinorityError
from minority.runs.io import atomic_write_bytes, atomic_write_json, ensure_writable_dir

log = logging.getLogger("minority")

DISTRIBUTION_COLUMNS = ("likelihood_bpd", "png_bpp", "avgknn", "lof", "rarity", "density", "clipscore")
PERF_COLUMNS = ("backbone", "family", "arm", "method", "device", "batch", "images", "steps", "guidance",
                "seconds_per_image", "seconds_per_image_ci_low", "seconds_per_image_ci_high", "timed_batches",
                "ratio_to_ddim", "peak_memory_mb", "memory_kind", "unet_forward_per_batch", "unet_backward_per_batch",
                "backward_calls_per_batch", "max_batch", "images_per_second", "error")


def _prepare_out(plan: Plan) -> Path:
    out = Path(plan.out)
    cfg = plan.config
    if (out / "benchmark.json").is_file() and not (cfg.resume or cfg.overwrite):
        raise MinorityError(f"{out} already holds a benchmark: pass --resume to reuse its finished runs, "
                            "--overwrite to replace it, or another --out.")
    if cfg.overwrite and (out / "runs").is_dir():
        shutil.rmtree(out / "runs")
    return ensure_writable_dir(out)


def benchmark(cfg: BenchmarkConfig, command: str | None = None, protocol: Protocol | None = None) -> Path:
    """Run the protocol of ``cfg`` and write its outputs; returns the output folder.

    Args:
        cfg: the benchmark configuration (``minority benchmark`` flags).
        command: the command line to record (default: this process' ``minority`` command line, if it is one).
        protocol: a protocol built at run time (``minority sweep``) instead of the registered ``cfg.protocol``.
    """
    plan = resolve(cfg, protocol)
    out = _prepare_out(plan)
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    try:
        if plan.protocol.kind == "perf":
            rows, details = run_perf(plan)
        else:
            rows, details = run_quality(plan)
            if cfg.generate_only:
                log.info("[%s] generated in %.0f s (--generate-only: no evaluation against the reference)",
                         plan.protocol.name, time.perf_counter() - t0)
                return out
        info = {
            "protocol": plan.protocol.name, "title": plan.protocol.title, "source": plan.protocol.source,
            "command": command or invoked_command() or canonical_command(cfg, plan),
            "canonical_command": canonical_command(cfg, plan),
            "config": dataclasses.asdict(cfg), "plan": plan.describe(), "details": details, "versions": versions(),
            "started": started.isoformat(timespec="seconds"), "wall_seconds": round(time.perf_counter() - t0, 2),
        }
        if plan.protocol.kind == "perf":
            _write_perf(plan, rows, info, out)
        else:
            _write_quality(plan, rows, info, out)
        atomic_write_json(out / "benchmark.json", info)
    finally:
        torch.set_num_threads(threads_before)
    log.info("[%s] done in %.0f s: %s", plan.protocol.name, time.perf_counter() - t0, out / "results.md")
    return out


def canonical_command(cfg: BenchmarkConfig, plan: Plan) -> str:
    """A ``minority benchmark`` command with every resolved value explicit (reproduces the run)."""

    words = ["minority", "benchmark", cfg.protocol, "--out", plan.out, "--model", ",".join(plan.models),
             "--prompts", str(plan.prompts), "--seeds", ",".join(map(str, plan.seeds))]
    if plan.steps is not None:
        words += ["--steps", str(plan.steps)]
    if cfg.guidance is not None:
        words += ["--guidance", str(cfg.guidance)]
    words += ["--device", cfg.device]
    if plan.protocol.kind != "perf":
        words += ["--features", cfg.features]
    if cfg.quick:
        words.append("--quick")
    if cfg.reference is not None:
        words += ["--reference", cfg.reference]
    if cfg.methods:
        words += ["--methods", ",".join(cfg.methods)]
    if cfg.prompt_template is not None:
        words += ["--prompt-template", cfg.prompt_template]
    for k, v in cfg.params.items():
        words += ["--param", setting_word(k, v)]
    for k, v in cfg.settings.items():
        words += ["--set", setting_word(k, v)]
    if cfg.clip_weights:
        words += ["--clip-weights", cfg.clip_weights]
    if plan.protocol.kind == "perf":
        words += ["--batch-size", str(cfg.batch_size), "--max-batch", str(cfg.max_batch)]
    if cfg.threads:
        words += ["--threads", str(cfg.threads)]
    if cfg.deterministic:
        words.append("--deterministic")
    return shell_join(words)


def _header(plan: Plan, info: dict) -> list[str]:
    p, cfg = plan.protocol, plan.config
    full = p.full
    if cfg.quick:
        size = "QUICK smoke size — not a reproduction"
    elif (plan.prompts, len(plan.seeds), plan.steps) == (full.prompts, full.seeds, full.steps):
        size = "full size"
    else:
        size = (f"reduced size: {plan.prompts} × {len(plan.seeds)}"
                f"{f', {plan.steps} steps' if plan.steps != full.steps else ''}; full size {full.prompts} × "
                f"{full.seeds}{f', {full.steps} steps' if full.steps else ''}")
    lines = [f"# {p.title}", "", f"Reproduces: {p.source}. Protocol `{p.name}` ({size}).", ""]
    if any(m.startswith("tiny-random") for m in plan.models):
        lines += ["**Model is a tiny RANDOMLY INITIALISED pipeline: the numbers below only show that the protocol "
                  "runs; they say nothing about the methods.**", ""]
    return lines


def _footer(plan: Plan, info: dict, images: list[tuple[str, str]]) -> list[str]:
    lines = []
    for title, name in images:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    lines += ["## Commands", "", "This run:", "", "```bash", info["command"], "```", ""]
    if info["command"] != info["canonical_command"]:
        lines += ["With every resolved value explicit:", "", "```bash", info["canonical_command"], "```", ""]
    arms = info["details"].get("arms", {})
    if arms:
        lines += ["Equivalent per-method commands:", "", "```bash"]
        for d in arms.values():
            lines.append(d["generate_command"])
            lines += list(d["evaluate_commands"].values())
        lines += ["```", ""]
    v = info["versions"]
    lines += ["## Versions", "", markdown_table(["component", "version"], [[k, "" if x is None else x] for k, x in v.items()]),
              "", f"Started {info['started']}, wall time {info['wall_seconds']:.1f} s.", ""]
    return lines


def _write_quality(plan: Plan, rows: list[dict], info: dict, out: Path) -> None:
    p = plan.protocol
    details = info["details"]
    metrics = [m for g in p.groups for m in details["metrics"][g.name]]
    columns = ["arm", "method", "params", "model", "images", "steps", "guidance", "seconds_per_image"]
    for m in metrics:
        columns += metric_columns(m)
    if "rarity" in metrics:
        columns.append("rarity_outside_fraction")
    write_csv(out / "results.csv", rows, columns)
    title = f"{p.name} on {plan.models[0]}"
    images = []
    plots.metric_bars(rows, metrics, out / "metrics.png", title)
    images.append(("Metrics with 95% CIs", "metrics.png"))

    groups = [g.name for g in p.groups]
    per_arm = {a.name: per_image_values(Path(details["arms"][a.name]["folder"]), groups) for a in plan.arms}
    if plots.distributions(per_arm, DISTRIBUTION_COLUMNS, out / "distributions.png", title):
        images.append(("Per-image distributions", "distributions.png"))
    comparison_grid({a.name: Path(details["arms"][a.name]["folder"]) for a in plan.arms}, out / "grid.png",
                    f"{title}: same prompt and seed in each row", plan.config.grid_rows,
                    cell=_cell([a.name for a in plan.arms]))
    images.insert(0, ("Samples (same prompt and seed in each row)", "grid.png"))
    n_items = max(1, len(details["items"]))
    r0 = rows[0] if rows else {}
    lines = _header(plan, info)
    lines += [f"Model `{plan.models[0]}`; {n_items} {'prompts' if p.kind == 'text' else 'classes'} × "
              f"{len(plan.seeds)} seeds = {n_items * len(plan.seeds)} images per method, identical seeds across "
              f"methods; {r0.get('steps', '')} steps, guidance {r0.get('guidance', '')}; features "
              f"`{plan.config.features}`.", ""]
    for g in p.groups:
        lines.append(f"- evaluation `{g.name}`: {', '.join(details['metrics'][g.name])} against "
                     f"`{plan.references[g.name]}`")
    lines += ["", "## Results", "", "Mean ± 95% CI half-width (asymmetric Wilson intervals of 0/1 per-image "
              "indicators as [low, high]); `–` = not computed.", "", metrics_markdown(rows, metrics), ""]
    if {"likelihood", "png-bpp"} <= set(metrics) and plan.arms:
        base = plan.arms[0].name
        lines += detail_markdown(detail_control(_nll_and_detail(plan, details), base), base)
    notes = list(p.notes) + [f"{m} skipped: {why}" for m, why in details["skipped_metrics"].items()]
    places = {(d.get("generated_on"), d.get("evaluated_on")) for d in details["arms"].values()}
    if any(g and e and g != e for g, e in places):
        gen_on = ", ".join(sorted({g for g, _ in places if g}))
        what = "generated (and likelihoods computed)" if "likelihood" in metrics else "generated"
        notes.append(f"{what} on {gen_on} by the same command with `--device {gen_on} --generate-only` in place of "
                     "`--resume`; evaluated on " + ", ".join(sorted({e for _, e in places if e})) +
                     " by this command (seconds_per_image are the generating device's)")
    if "rarity" in metrics:
        notes.append("rarity is averaged over the images inside some reference k-NN ball; the share outside is in "
                     "results.csv (rarity_outside_fraction): " + ", ".join(
                         f"{r['arm']} {float(r['rarity_outside_fraction']):.0%}" for r in rows
                         if r.get("rarity_outside_fraction") not in ("", None)))
    lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    lines += _footer(plan, info, images)
    atomic_write_bytes(out / "results.md", "\n".join(lines).encode("utf-8"))


def _nll_and_detail(plan: Plan, details: dict) -> dict[str, tuple[list[float], list[float]]]:
    """Per arm, the per-image (NLL bits/dim, PNG bits/pixel) of the evaluation that computed both."""
    out = {}
    for a in plan.arms:
        for g in plan.protocol.groups:
            path = Path(details["arms"][a.name]["folder"]) / f"eval-{g.name}" / "per_image.csv"
            rows = read_csv(path) if path.is_file() else []
            if rows and "likelihood_bpd" in rows[0] and "png_bpp" in rows[0]:
                pairs = [(float(r["likelihood_bpd"] or "nan"), float(r["png_bpp"] or "nan")) for r in rows]
                out[a.name] = ([x for x, _ in pairs], [y for _, y in pairs])
    return out


def _cell(labels: list[str]) -> int:
    return int(min(200, max(96, 8 * max(len(s) for s in labels) + 8)))


def _write_perf(plan: Plan, rows: list[dict], info: dict, out: Path) -> None:
    write_csv(out / "results.csv", rows, PERF_COLUMNS)
    images = []
    ok = [r for r in rows if "error" not in r]
    if ok:
        plots.perf_bars(ok, out / "perf.png", "perf: " + ", ".join(plan.models))
        images.append(("Time and memory", "perf.png"))
    for model, d in info["details"]["backbones"].items():
        runs = {r["arm"]: Path(d["folder"]) / _slug(r["arm"]) for r in ok if r["backbone"] == model}
        if runs:
            name = f"grid_{_slug(model)}.png"
            comparison_grid(runs, out / name, f"{model}: same prompt and seed in each row", plan.config.grid_rows,
                            cell=_cell(list(runs)))
            images.append((f"Samples on {model}", name))
    lines = _header(plan, info)
    lines += [f"Backbones: {', '.join(f'`{m}`' for m in plan.models)}; {plan.prompts} prompt(s) × "
              f"{len(plan.seeds)} seeds per method; batch {plan.config.batch_size}; torch threads "
              f"{info['versions'].get('torch_threads')}; device `{rows[0]['device'] if rows else ''}`.", "",
              "## Results", ""]
    cuda = any(r.get("max_batch") not in (None, "") for r in rows)
    for model in plan.models:
        sub = [r for r in rows if r["backbone"] == model]
        header = ["method", "s / image", "× ddim", f"peak memory MiB ({sub[0].get('memory_kind', '') if sub else ''})",
                  "UNet fwd / batch", "UNet bwd / batch", "backward calls / batch", "steps"]
        if cuda:
            header += ["max batch", "images / s"]
        body = []
        for r in sub:
            if "error" in r:
                body.append([r["arm"], f"failed: {r['error']}"] + [""] * (len(header) - 2))
                continue
            cells = [r["arm"], format_value(r["seconds_per_image"], r.get("seconds_per_image_ci_low"),
                                            r.get("seconds_per_image_ci_high")),
                     format_value(r.get("ratio_to_ddim"), digits=3), f"{r['peak_memory_mb']:.0f}",
                     f"{r['unet_forward_per_batch']:g}", f"{r['unet_backward_per_batch']:g}",
                     f"{r['backward_calls_per_batch']:g}", r["steps"]]
            if cuda:
                cells += [r.get("max_batch", ""), format_value(r.get("images_per_second"), digits=3)]
            body.append(cells)
        lines += [f"### {model} ({sub[0]['family'] if sub else ''})", "", markdown_table(header, body), ""]
    lines += ["Notes:", ""] + [f"- {n}" for n in plan.protocol.notes] + [""]
    lines += _footer(plan, info, images)
    atomic_write_bytes(out / "results.md", "\n".join(lines).encode("utf-8"))


def _slug(text: str) -> str:
    return slug(text)


__all__ = ["HEADERS", "benchmark", "canonical_command"]
