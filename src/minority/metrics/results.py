"""The result of ``evaluate``: its dict (``metrics.json`` body and per-image rows), the files and the table."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from minority.metrics.catalog import METRICS


def jsonable(v):
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.integer, int, bool, str)) or v is None:
        return v.item() if isinstance(v, np.generic) else v
    if isinstance(v, Path):
        return str(v)
    return getattr(v, "__name__", None) or type(v).__name__


def build_result(gen, names, results, per_image, idx, valid, run, main, reference, s, extra, run_args) -> dict:
    rows = []
    for j, i in enumerate(idx):
        m = gen.meta[i]
        row = {"file": gen.keys[i], "prompt": m.get("prompt", ""), "prompt_index": m.get("prompt_index", ""),
               "seed": m.get("seed", "")}
        for col, vals in per_image.items():
            row[col] = float(vals[j])
        rows.append(row)
    extractors = {}
    for (_spec, weights), ext in run.extractors.items():
        extractors[ext.name] = {**ext.describe(), "weights": None if weights == "None" else weights}
    main_name = main.name if main is not None else None
    return {
        "images": gen.name,
        "reference": None if reference is None else str(reference),
        "metrics": {m: results[m] for m in names if m in results},
        "settings": jsonable({**s, **run_args, "features": main_name}),
        "extractor": main_name,
        "extractors": jsonable(extractors),
        "counts": {"images": int(valid.sum()), "images_total": len(gen),
                   "skipped": [gen.keys[i] for i in np.flatnonzero(~valid)],
                   **({"reference": extra["reference"]["used"], "reference_total": extra["reference"]["images"]}
                      if "reference" in extra else {})},
        "reference_info": jsonable(extra.get("reference")),
        "per_image": rows,
    }


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """``(metrics.json path, per_image.csv path)`` for ``out`` (a ``.json`` file or a folder)."""
    out = Path(out).expanduser()
    if out.suffix.lower() == ".json":
        csv_path = out.with_name("per_image.csv") if out.name == "metrics.json" else out.with_name(out.stem + "_per_image.csv")
        return out, csv_path
    return out / "metrics.json", out / "per_image.csv"


def write_reports(result: dict, out: str | Path) -> tuple[Path, Path]:
    """Write ``metrics.json`` (everything but the per-image rows) and ``per_image.csv``."""
    json_path, csv_path = output_paths(out)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    body = {k: v for k, v in result.items() if k != "per_image"}
    json_path.write_text(json.dumps(jsonable(body), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    rows = result["per_image"]
    cols = list(dict.fromkeys(c for r in rows for c in r)) if rows else ["file"]
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
    return json_path, csv_path


def format_table(result: dict) -> str:
    """A readable table of the metric values (value, 95% CI, n)."""
    lines = [f"{'metric':<12} {'value':>12}  {'95% CI':<27} {'n':>7}  note"]
    lines.append("-" * len(lines[0]))
    for name, r in result["metrics"].items():
        v = r.get("value")
        ci = r.get("ci95")
        ci_s = f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
        note = METRICS[name].description
        if name == "rarity":
            note += f"; outside {r['outside_fraction']:.1%}"
        if name == "kid":
            note += f"; std {r['std']:.3g}"
        v_s = f"{v:.5g}" if isinstance(v, float) and math.isfinite(v) else str(v)
        lines.append(f"{name:<12} {v_s:>12}  {ci_s:<27} {r.get('n', ''):>7}  {note}")
    c = result["counts"]
    tail = f"{c['images']} images"
    if c.get("skipped"):
        tail += f" ({len(c['skipped'])} skipped)"
    if "reference" in c:
        tail += f"; reference {c['reference']} of {c['reference_total']}"
    if result.get("extractor"):
        tail += f"; features {result['extractor']}"
    lines.append(tail)
    return "\n".join(lines)
