"""Result tables: ``results.csv`` (one row per arm, every number with its 95% CI bounds and n) and
``results.md`` (a paper-style table of ``mean ± half-width``).

A per-image metric's CI comes from the evaluation suite (:func:`minority.metrics.summarize`: normal
approximation, or Wilson for 0/1 indicators — then asymmetric and shown as ``mean [low, high]``).
Set-level metrics (recall, coverage, fd, sfid) have no per-image CI and show the value alone.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from minority.runs.io import atomic_write_bytes

# Paper-style column headers; ↑/↓ = better for quality metrics, "↑ rarer" = higher means more minority-like.
HEADERS = {
    "alignment": "Alignment ↑", "clipscore": "CLIPScore ↑", "pickscore": "PickScore ↑", "imagereward": "ImageReward ↑",
    "precision": "Precision ↑", "recall": "Recall ↑", "density": "Density ↑", "coverage": "Coverage ↑",
    "fd": "FD ↓", "sfid": "sFID ↓", "kid": "KID ↓", "likelihood": "NLL bits/dim (↑ rarer)", "png-bpp": "PNG bits/pixel",
    "avgknn": "AvgkNN (↑ rarer)", "lof": "LOF (↑ rarer)", "rarity": "Rarity (↑ rarer)", "ibs": "IBS ↓",
}


def metric_columns(metric: str) -> list[str]:
    """CSV columns of one metric: value, CI bounds and count."""
    return [metric, f"{metric}_ci_low", f"{metric}_ci_high", f"{metric}_n"]


def metric_cells(metric: str, entry: dict | None) -> dict:
    """CSV cells of one metric from its ``metrics.json`` entry (empty when missing)."""
    if entry is None:
        return dict.fromkeys(metric_columns(metric), "")
    ci = entry.get("ci95") or ["", ""]
    return {metric: _num(entry.get("value")), f"{metric}_ci_low": _num(ci[0]), f"{metric}_ci_high": _num(ci[1]),
            f"{metric}_n": entry.get("n", "")}


def _num(v):
    if v is None or v == "":
        return ""
    v = float(v)
    return "" if not math.isfinite(v) else v


def format_value(value, low=None, high=None, digits: int = 4) -> str:
    """``mean ± half-width`` (symmetric CI), ``mean [low, high]`` (asymmetric) or the value alone."""
    if value in ("", None) or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    value = float(value)
    v = f"{value:.{digits}g}"
    if low in ("", None) or high in ("", None):
        return v
    low, high = (0.0 if abs(float(x)) < 1e-12 else float(x) for x in (low, high))  # float dust of Wilson bounds
    half = (high - low) / 2
    if math.isclose(value - low, high - value, rel_tol=1e-6, abs_tol=1e-12):
        return f"{v} ± {half:.2g}"
    return f"{v} [{low:.{max(2, digits - 1)}g}, {high:.{max(2, digits - 1)}g}]"


def write_csv(path: str | Path, rows: list[dict], columns: Sequence[str]) -> Path:
    """Write ``rows`` with exactly ``columns`` (missing cells empty), atomically."""
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in columns})
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    return Path(path)


def read_csv(path: str | Path) -> list[dict]:
    """Rows of a CSV file as dicts of strings."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table (``|`` in cells escaped)."""
    def cell(x) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def metrics_markdown(rows: list[dict], metrics: Sequence[str], label: str = "arm") -> str:
    """The paper-style table: one row per arm, one column per metric (``mean ± CI``)."""
    header = ["method", *[HEADERS.get(m, m) for m in metrics], "images"]
    body = []
    for r in rows:
        cells = [format_value(r.get(m), r.get(f"{m}_ci_low"), r.get(f"{m}_ci_high")) for m in metrics]
        body.append([r[label], *cells, r.get("images", "")])
    return markdown_table(header, body)
