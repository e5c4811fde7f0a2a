"""Matplotlib figures (PNG, headless ``Agg`` backend): metric bars with 95% CIs, per-image distributions,
and the performance comparison."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from minority.benchmark.tables import HEADERS


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _f(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _errors(vals: list[float], lo: list[float], hi: list[float]) -> list[list[float]]:
    """Error-bar lengths below/above each value (0 where there is no CI; a CI that does not contain the
    reported value — e.g. IBS' value is pooled — is drawn as reaching the value)."""
    below = [max(0.0, v - a) if math.isfinite(a) and math.isfinite(v) else 0.0 for v, a in zip(vals, lo)]
    above = [max(0.0, b - v) if math.isfinite(b) and math.isfinite(v) else 0.0 for v, b in zip(vals, hi)]
    return [below, above]


def _grid(n: int) -> tuple[int, int]:
    cols = min(4, max(1, n))
    return math.ceil(n / cols), cols


def metric_bars(rows: list[dict], metrics: Sequence[str], path: str | Path, title: str, label: str = "arm") -> Path:
    """One panel per metric: a bar per arm with its 95% CI as an error bar (none for set-level metrics)."""
    plt = _plt()
    metrics = [m for m in metrics if any(math.isfinite(_f(r.get(m))) for r in rows)]
    nr, nc = _grid(max(1, len(metrics)))
    fig, axes = plt.subplots(nr, nc, figsize=(3.4 * nc, 2.9 * nr + 0.5), squeeze=False)
    names = [r[label] for r in rows]
    colors = plt.cm.tab10.colors
    for ax, m in zip(axes.flat, metrics):
        vals = [_f(r.get(m)) for r in rows]
        lo = [_f(r.get(f"{m}_ci_low")) for r in rows]
        hi = [_f(r.get(f"{m}_ci_high")) for r in rows]
        err = _errors(vals, lo, hi)
        ax.bar(range(len(rows)), [v if math.isfinite(v) else 0 for v in vals], yerr=err, capsize=3,
               color=[colors[i % len(colors)] for i in range(len(rows))])
        _label_panel(ax, HEADERS.get(m, m), names, first=0)
    return _save_panels(plt, fig, axes, len(metrics), title + " (bars: mean, whiskers: 95% CI)", path)


def distributions(per_arm: dict[str, dict[str, list[float]]], columns: Sequence[str], path: str | Path,
                  title: str) -> Path | None:
    """Box plots of per-image values (one panel per column, one box per arm); None if there is nothing to plot."""
    columns = [c for c in columns if any(per_arm[a].get(c) for a in per_arm)]
    if not columns:
        return None
    plt = _plt()
    nr, nc = _grid(len(columns))
    fig, axes = plt.subplots(nr, nc, figsize=(3.4 * nc, 2.9 * nr + 0.5), squeeze=False)
    arms = list(per_arm)
    for ax, c in zip(axes.flat, columns):
        data = [[v for v in per_arm[a].get(c, []) if math.isfinite(v)] or [math.nan] for a in arms]
        ax.boxplot(data, showmeans=True)
        _label_panel(ax, {"likelihood_bpd": HEADERS["likelihood"]}.get(c, HEADERS.get(c, c)), arms, first=1)
    return _save_panels(plt, fig, axes, len(columns), title + ": per-image distributions (triangle: mean)", path)


def _label_panel(ax, title: str, names: Sequence[str], first: int) -> None:
    """Title and slanted category labels (at x = first, first + 1, ...) of one small-multiples panel."""
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(first, first + len(names)))
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=7)
    ax.tick_params(axis="y", labelsize=7)


def _save_panels(plt, fig, axes, used: int, title: str, path: str | Path) -> Path:
    """Blank the unused panels, add the title, save at 110 dpi and close the figure."""
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def perf_bars(rows: list[dict], path: str | Path, title: str) -> Path:
    """Seconds per image (with CI), ratio to DDIM and peak memory: grouped bars, methods × backbones."""
    plt = _plt()
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    methods = list(dict.fromkeys(r["arm"] for r in rows))
    panels = [("seconds_per_image", "seconds / image"), ("ratio_to_ddim", "time ratio to ddim"),
              ("peak_memory_mb", "peak memory (MiB)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    width = 0.8 / max(1, len(backbones))
    for ax, (col, name) in zip(axes.flat, panels):
        for j, b in enumerate(backbones):
            by = {r["arm"]: r for r in rows if r["backbone"] == b}
            vals = [_f(by.get(m, {}).get(col)) for m in methods]
            err = None
            if col == "seconds_per_image":
                lo = [_f(by.get(m, {}).get("seconds_per_image_ci_low")) for m in methods]
                hi = [_f(by.get(m, {}).get("seconds_per_image_ci_high")) for m in methods]
                err = _errors(vals, lo, hi)
            xs = [i + (j - (len(backbones) - 1) / 2) * width for i in range(len(methods))]
            ax.bar(xs, [v if math.isfinite(v) else 0 for v in vals], width, yerr=err, capsize=2, label=b)
        ax.set_title(name, fontsize=10)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=35, ha="right", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
