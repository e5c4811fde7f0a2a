"""Quality protocols (MP Tab. 1–3, SGMS Tab. 1): generate every arm with identical prompts and seeds,
evaluate each with the evaluation suite, and collect one row per arm.

Layout under ``OUT``: ``runs/<arm>/`` (a ``minority generate`` folder) with ``eval-<group>/metrics.json`` and
``per_image.csv`` per evaluation group.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

from minority.benchmark.config import Plan
from minority.benchmark.protocols import PROMPT_TEMPLATE, Arm, class_prompts
from minority.benchmark.provenance import evaluate_command, generate_command
from minority.benchmark.tables import metric_cells, read_csv
from minority.errors import MinorityError
from minority.methods import make_method
from minority.metrics import DEFAULT_SETTINGS
from minority.pipelines.pixel import PixelPipeline, load_pipeline
from minority.runs.generate import GenerateConfig, resolve_device, run_generate
from minority.runs.io import read_jsonl
from minority.runs.model_scores import evaluate

log = logging.getLogger("minority")

CLIP_HUB_ID = "openai/clip-vit-large-patch14"


def clip_available(clip_weights: str | None) -> tuple[bool, str]:
    """Whether CLIPScore can run: local weights given, or CLIP ViT-L/14 in the Hugging Face cache (no network)."""
    if clip_weights:
        if not Path(clip_weights).expanduser().is_dir():
            raise MinorityError(f"--clip-weights {clip_weights} is not a folder: pass a CLIP ViT-L/14 folder saved with "
                                "save_pretrained (huggingface-cli download openai/clip-vit-large-patch14 --local-dir DIR).")
        return True, f"CLIP weights {clip_weights}"
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(CLIP_HUB_ID, "config.json")
    except Exception:  # noqa: BLE001 -- any hub/cache problem means "not available"
        hit = None
    if isinstance(hit, str):
        return True, f"{CLIP_HUB_ID} from the Hugging Face cache"
    return False, f"no CLIP ViT-L/14 weights ({CLIP_HUB_ID} is not in the Hugging Face cache): pass --clip-weights DIR"


def _items(pipe, plan: Plan) -> tuple[list[str], list[int]]:
    """Prompts (text models) or class labels (pixel models) of the protocol."""

    pixel = isinstance(pipe, PixelPipeline)
    if plan.protocol.kind == "text" and pixel:
        raise MinorityError(f"{plan.protocol.name} needs a text-to-image model, and {plan.models[0]!r} is pixel-space: "
                            "use sgms-table1 for pixel models.")
    if plan.protocol.kind == "pixel" and not pixel:
        raise MinorityError(f"{plan.protocol.name} needs a pixel-space model (a UNet2DModel folder), and "
                            f"{plan.models[0]!r} is text-to-image: use mp-table1 for text-to-image models.")
    if not pixel:
        return class_prompts(plan.prompts, plan.config.prompt_template or PROMPT_TEMPLATE), []
    n, null = pipe.num_classes, pipe.components.null_class_label
    if n is None:
        return [], []  # unconditional: every seed is one image
    usable = [c for c in range(n) if c != null]
    if plan.prompts > len(usable):
        raise MinorityError(f"--prompts {plan.prompts} asks for more classes than the model has ({len(usable)}).")
    return [], usable[: plan.prompts]


def check_sample_size(images: int, metrics_by_group: dict[str, list[str]], settings: dict) -> None:
    """Fail before generating when the k-NN metrics cannot run on ``images`` generated images per method."""

    metrics = {m for ms in metrics_by_group.values() for m in ms}
    need = {"precision": "pr_k", "recall": "pr_k", "density": "dc_k", "coverage": "dc_k"}
    ks = {need[m]: int(settings.get(need[m], DEFAULT_SETTINGS[need[m]])) for m in metrics if m in need}
    if ks and images <= max(ks.values()):
        key = max(ks, key=ks.get)
        raise MinorityError(f"{images} images per method are too few for {key}={ks[key]} (needs at least {ks[key] + 1}): "
                            f"raise --prompts/--seeds or pass --set {key}=K with a smaller K.")


def _same_generation(run_dir: Path, gcfg: GenerateConfig, expected: int, model_defaults: dict | None = None) -> str | None:
    """``--resume``: ``"complete"`` when the folder holds the whole generation of this exact configuration,
    ``"partial"`` when it holds part of it (an interrupted run: generation's own resume finishes it), else None.

    ``model_defaults``: the model folder's per-method defaults that apply now; a folder generated under other ones
    (e.g. before ``minority sweep --install``) is not reused."""
    try:
        old = json.loads((run_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    keys = ("prompts", "method", "seeds", "steps", "guidance", "params", "class_labels", "model")
    settings = gcfg.to_json()
    new = json.loads(json.dumps({k: settings[k] for k in keys}))
    if not all(old.get(k) == new[k] for k in keys):
        return None
    if (old.get("resolved") or {}).get("model_method_defaults", {}) != json.loads(json.dumps(model_defaults or {})):
        return None
    manifest = run_dir / "manifest.jsonl"
    return "complete" if manifest.is_file() and len(read_jsonl(manifest)) == expected else "partial"


def _evaluate_arm(run_dir: Path, plan: Plan, metrics_by_group: dict[str, list[str]], device: str, model: str,
                  clip_weights: str | None, reuse: bool) -> tuple[dict, dict]:
    """Evaluate one generation for every group (``reuse``: keep matching earlier evaluations); returns (metric
    entries by name, commands by group)."""

    cfg = plan.config
    entries, commands = {}, {}
    for group in plan.protocol.groups:
        metrics = metrics_by_group[group.name]
        settings = dict(plan.settings)
        if "likelihood" in metrics:
            settings.setdefault("likelihood_model", model)
        if "clipscore" in metrics and clip_weights:
            settings.setdefault("clip_weights", clip_weights)
        out = run_dir / f"eval-{group.name}" / "metrics.json"
        commands[group.name] = evaluate_command(str(run_dir), plan.references[group.name], metrics, cfg.features,
                                                settings, str(out), device)
        if reuse and out.is_file():
            old = json.loads(out.read_text())
            same_settings = all(old.get("settings", {}).get(k) == v for k, v in settings.items()
                                if isinstance(v, (str, int, float, bool, type(None))))
            if (set(old.get("metrics", {})) == set(metrics) and old.get("reference") == plan.references[group.name]
                    and old.get("extractor") in (cfg.features, None) and same_settings):
                log.info("  %s: reusing %s", group.name, out)
                entries.update(old["metrics"])
                continue
        log.info("  evaluating %s against %s: %s", group.name, plan.references[group.name], ", ".join(metrics))
        result = evaluate(run_dir, reference=plan.references[group.name], metrics=metrics, features=cfg.features,
                          out=out, device=device, progress=False, **settings)
        entries.update(result["metrics"])
    return entries, commands


def _model_metrics(run_dir: Path, plan: Plan, metrics_by_group: dict[str, list[str]], device: str, model: str) -> None:
    """``--generate-only``: compute the metrics that need the diffusion model but no reference (likelihood), so
    that their cache entries are ready for the evaluation (``--resume``) wherever it runs."""

    if not any("likelihood" in ms for ms in metrics_by_group.values()):
        return
    settings = {k: v for k, v in plan.settings.items() if k.startswith("likelihood_")}
    settings.setdefault("likelihood_model", model)
    log.info("  likelihood of %s (cached for the evaluation)", run_dir)
    evaluate(run_dir, metrics=["likelihood"], out=run_dir / "eval-likelihood" / "metrics.json", device=device,
             progress=False, **settings)


def run_quality(plan: Plan) -> tuple[list[dict], dict]:
    """Run a quality protocol; returns (one result row per arm, details for ``benchmark.json``)."""

    cfg = plan.config
    model = plan.models[0]
    out = Path(plan.out)
    device = resolve_device(cfg.device)
    log.info("[%s] loading %s on %s", plan.protocol.name, model, device)
    pipe = load_pipeline(model, device=device)
    prompts, labels = _items(pipe, plan)
    metrics_by_group = {g.name: list(g.metrics) for g in plan.protocol.groups}
    skipped = {}
    for m in plan.protocol.optional_metrics:
        if m == "clipscore":
            ok, why = clip_available(cfg.clip_weights)
            if ok:
                metrics_by_group[plan.protocol.groups[0].name].append(m)
            else:
                skipped[m] = why
    expected = max(len(prompts), len(labels), 1) * len(plan.seeds)
    check_sample_size(expected, metrics_by_group, plan.settings)
    rows, details = [], {"arms": {}, "skipped_metrics": skipped, "metrics": metrics_by_group,
                         "items": prompts or labels}
    for arm in plan.arms:
        rows.append(_run_arm(arm, plan, pipe, model, prompts, labels, expected, metrics_by_group, device, out,
                             details["arms"]))
    return rows, details


def _run_arm(arm: Arm, plan: Plan, pipe, model: str, prompts: list[str], labels: list[int], expected: int,
             metrics_by_group: dict, device: str, out: Path, arm_details: dict) -> dict:
    cfg = plan.config
    run_dir = out / "runs" / arm.slug
    params = plan.arm_params(arm)
    gcfg = GenerateConfig(prompts=tuple(prompts), model=model, method=arm.method, seeds=tuple(plan.seeds),
                          steps=plan.steps, guidance=cfg.guidance, out=str(run_dir), overwrite=True, params=params,
                          class_labels=tuple(labels), batch_size=cfg.batch_size, deterministic=cfg.deterministic)
    t0 = time.perf_counter()
    applied = pipe.model_method_defaults(make_method(arm.method, params), explicit=set(params))[1]
    state = _same_generation(run_dir, gcfg, expected, applied) if cfg.resume else None
    reuse = state == "complete"
    if reuse:
        log.info("[%s] %s: reusing the %d images in %s", plan.protocol.name, arm.name, expected, run_dir)
    elif state == "partial":
        log.info("[%s] %s: finishing the interrupted generation in %s", plan.protocol.name, arm.name, run_dir)
        run_generate(dataclasses.replace(gcfg, overwrite=False, resume=True), pipe=pipe, progress=False)
    else:
        log.info("[%s] %s: generating %d images", plan.protocol.name, arm.name, expected)
        run_generate(gcfg, pipe=pipe, progress=False)
    t_gen = time.perf_counter() - t0
    manifest = read_jsonl(run_dir / "manifest.jsonl")
    if cfg.generate_only:
        _model_metrics(run_dir, plan, metrics_by_group, device, model)
        arm_details[arm.name] = {"folder": str(run_dir), "params": params, "generate_seconds": round(t_gen, 3)}
        return {"arm": arm.name, "method": arm.method, "images": len(manifest)}
    t0 = time.perf_counter()
    entries, eval_cmds = _evaluate_arm(run_dir, plan, metrics_by_group, device, model, cfg.clip_weights, reuse)
    t_eval = time.perf_counter() - t0
    gen_device = _generated_on(run_dir) or device
    secs = [float(r["seconds"]) for r in manifest if isinstance(r.get("seconds"), (int, float))]
    row = {"arm": arm.name, "method": arm.method, "params": json.dumps(params, sort_keys=True), "model": model,
           "images": len(manifest), "seconds_per_image": sum(secs) / len(secs) if secs else "",
           "steps": manifest[0].get("steps", "") if manifest else "",
           "guidance": manifest[0].get("guidance", "") if manifest else ""}
    for metrics in metrics_by_group.values():
        for m in metrics:
            row.update(metric_cells(m, entries.get(m)))
    if "rarity" in entries and entries["rarity"].get("outside_fraction") is not None:
        row["rarity_outside_fraction"] = entries["rarity"]["outside_fraction"]
    arm_details[arm.name] = {
        "folder": str(run_dir), "params": params, "generate_seconds": round(t_gen, 3), "evaluate_seconds": round(t_eval, 3),
        "generated_on": gen_device, "evaluated_on": device,
        "generate_command": generate_command(model, arm.method, params, prompts, labels, plan.seeds, plan.steps,
                                             cfg.guidance, gen_device, cfg.batch_size, str(run_dir), cfg.deterministic),
        "evaluate_commands": eval_cmds,
    }
    return row


def _generated_on(run_dir: Path) -> str | None:
    """The device that generated ``run_dir`` (its ``config.json``; a reused generation may come from elsewhere)."""
    try:
        return json.loads((run_dir / "config.json").read_text()).get("resolved_device")
    except (OSError, json.JSONDecodeError):
        return None


def per_image_values(run_dir: Path, groups: list[str]) -> dict[str, list[float]]:
    """Per-image metric columns of an arm's ``per_image.csv`` files (numbers only)."""

    skip = {"file", "prompt", "prompt_index", "seed", "predicted_class", "prompt_class", "rarity_outside"}
    values: dict[str, list[float]] = {}
    for g in groups:
        path = run_dir / f"eval-{g}" / "per_image.csv"
        if not path.is_file():
            continue
        for r in read_csv(path):
            for k, v in r.items():
                if k in skip or v in ("", None):
                    continue
                try:
                    x = float(v)
                except ValueError:
                    continue
                if math.isfinite(x):
                    values.setdefault(k, []).append(x)
    return values
