"""``minority report DIR...``: one self-contained HTML page from benchmark, generate and evaluate outputs.

Each DIR (searched up to three levels deep) contributes sections:

* a benchmark folder (``results.md`` + ``benchmark.json``): its results page — tables with 95% CIs, grids and
  plots, the exact commands and the versions — with ``results.csv`` attached as a download;
* a generation folder (``manifest.jsonl`` + ``config.json``): its settings, the equivalent ``minority
  generate`` command, an image gallery (rows = prompts, columns = seeds) and the metrics of any
  ``metrics.json`` inside it;
* an evaluation (``metrics.json``): its metric table (value, 95% CI, n) and the equivalent command.

Everything is embedded (images as base64 ``data:`` URIs, CSS inline, no scripts), so the file can be
mailed or archived on its own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shlex
from pathlib import Path

from minority.benchmark.html import (  # noqa: F401
    CSS,
    MAX_DEPTH,
    Section,
    code_block,
    data_uri,
    esc,
    html_table,
    image_tag,
    markdown_to_html,
)
from minority.benchmark.provenance import invoked_command, versions
from minority.errors import MinorityError
from minority.runs.io import atomic_write_bytes, read_jsonl


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MinorityError(f"cannot read {path} ({type(exc).__name__}): it is not the JSON that minority writes") from exc


def benchmark_section(folder: Path) -> Section:
    """A benchmark's ``results.md`` (images embedded) and its ``results.csv`` as a download."""
    md = (folder / "results.md").read_text(encoding="utf-8")
    info = _read_json(folder / "benchmark.json") if (folder / "benchmark.json").is_file() else {}
    title = info.get("title") or (md.splitlines()[0].lstrip("# ") if md else folder.name)
    sec = Section(f"Benchmark {info.get('protocol', '')}: {title}", folder, "benchmark")
    body = md.split("\n", 1)[1] if md.startswith("# ") else md
    sec.body.append(f"<p class='muted'>Folder <code>{esc(folder)}</code></p>")
    sec.body.append(markdown_to_html(body, folder))
    csv_path = folder / "results.csv"
    if csv_path.is_file():
        sec.body.append(f'<p><a download="{esc(folder.name)}-results.csv" '
                        f'href="{data_uri(csv_path.read_bytes(), "text/csv")}">Download results.csv</a></p>')
    return sec


def generate_command_from_config(cfg: dict) -> str:
    """The ``minority generate`` command equivalent to a ``config.json``."""
    words = ["minority", "generate", *cfg.get("prompts", [])]
    for key in ("model", "method", "steps", "guidance", "negative_prompt", "height", "width", "batch_size", "device",
                "dtype", "lightning_unet"):
        if cfg.get(key) is not None:
            words += ["--" + key.replace("_", "-"), str(cfg[key])]
    for c in cfg.get("class_labels") or []:
        words += ["--class-label", str(c)]
    if cfg.get("seeds"):
        words += ["--seeds", ",".join(str(s) for s in cfg["seeds"])]
    for k, v in (cfg.get("params") or {}).items():
        flag = "--" + k.replace("_", "-")
        words += [flag] if v is True else ["--no-" + k.replace("_", "-")] if v is False else [flag, str(v)]
    words += ["--out", str(cfg.get("out", "OUT"))]
    return shlex.join(words)


def _gallery(folder: Path, rows: list[dict], max_images: int, thumb: int) -> str:
    groups: dict = {}
    for r in rows:
        key = r.get("prompt") if r.get("prompt") is not None else f"class {r.get('class_label', '')}"
        groups.setdefault(key, []).append(r)
    per_row = max(1, min(max(len(v) for v in groups.values()), max_images))
    out, shown = [], 0
    for key, items in groups.items():
        if shown >= max_images:
            break
        cells = []
        for r in items[:per_row]:
            if shown >= max_images:
                break
            tag = image_tag(folder / r["file"], f"{key} (seed {r.get('seed')})", max_side=2 * thumb, css_class="thumb",
                            width=thumb)
            cells.append(f"{tag}<br>seed {esc(r.get('seed'))}")
            shown += 1
        out.append([esc(key), *cells])
    body = html_table(["prompt / class", *[""] * per_row], [r + [""] * (per_row + 1 - len(r)) for r in out], raw=True)
    note = f"<p class='muted'>{shown} of {len(rows)} images shown.</p>"
    return "<div class='gallery'>" + body + "</div>" + note


def metrics_table(result: dict) -> str:
    """The metric table of a ``metrics.json``: value, 95% CI and n."""
    rows = []
    for name, r in (result.get("metrics") or {}).items():
        ci = r.get("ci95")
        v = r.get("value")
        rows.append([name, f"{v:.5g}" if isinstance(v, (int, float)) and math.isfinite(v) else "–" if v is None else v,
                     f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "–", r.get("n", "")])
    counts = result.get("counts", {})
    note = (f"<p class='muted'>{counts.get('images', '?')} images; reference <code>{esc(result.get('reference'))}</code>"
            f"; features <code>{esc(result.get('extractor'))}</code></p>")
    return html_table(["metric", "value", "95% CI", "n"], rows) + note


def evaluate_command_from_metrics(result: dict, path: Path) -> str:
    """The ``minority evaluate`` command equivalent to a ``metrics.json``."""
    words = ["minority", "evaluate", "--images", str(result.get("images", "IMAGES"))]
    if result.get("reference"):
        words += ["--reference", str(result["reference"])]
    words += ["--metrics", ",".join(result.get("metrics", {})), "--out", str(path)]
    if result.get("extractor"):
        words += ["--features", str(result["extractor"])]
    return shlex.join(words)


def evaluation_section(path: Path) -> Section:
    """A ``metrics.json``: its metric table and the equivalent ``minority evaluate`` command."""
    result = _read_json(path)
    sec = Section(f"Evaluation {path.parent.name}/{path.name}", path.parent, "evaluate")
    sec.body += [metrics_table(result), "<p>Equivalent command:</p>", code_block(evaluate_command_from_metrics(result, path))]
    return sec


def generation_section(folder: Path, max_images: int, thumb: int) -> Section:
    """A ``minority generate`` folder: settings, command, gallery, per-image timing and any evaluations inside."""

    rows = read_jsonl(folder / "manifest.jsonl")
    cfg = _read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    method = cfg.get("method") or (rows[0].get("method") if rows else "?")
    sec = Section(f"Generation {folder.name} ({method})", folder, "generate")
    secs = [float(r["seconds"]) for r in rows if isinstance(r.get("seconds"), (int, float))]
    settings = [["folder", str(folder)], ["images", len(rows)], ["model", cfg.get("model") or (rows[0].get("model") if rows else "")],
                ["method", method], ["steps", rows[0].get("steps", "") if rows else ""],
                ["guidance", rows[0].get("guidance", "") if rows else ""],
                ["seconds / image (mean)", f"{sum(secs) / len(secs):.3g}" if secs else "–"]]
    params = cfg.get("params") or {}
    if params:
        settings.append(["method parameters", json.dumps(params, sort_keys=True)])
    sec.body.append(html_table(["setting", "value"], settings))
    if cfg:
        sec.body += ["<p>Equivalent command:</p>", code_block(generate_command_from_config(cfg))]
    if rows:
        sec.body.append(_gallery(folder, rows, max_images, thumb))
    for mpath in sorted(folder.rglob("metrics.json")):
        if len(mpath.relative_to(folder).parts) <= MAX_DEPTH:
            result = _read_json(mpath)
            sec.body += [f"<h4>Metrics: {esc(mpath.relative_to(folder))}</h4>", metrics_table(result)]
    return sec


def find_sections(root: Path, max_images: int = 24, thumb: int = 96) -> list[Section]:
    """Every benchmark, generation and evaluation under ``root`` (up to :data:`MAX_DEPTH` levels deep)."""
    if not root.exists():
        raise MinorityError(f"{root} does not exist: pass a benchmark, generate or evaluate output folder.")
    if root.is_file():
        if root.name.endswith(".json"):
            return [evaluation_section(root)]
        raise MinorityError(f"{root} is a file: pass an output folder (or a metrics.json).")
    sections: list[Section] = []

    def walk(folder: Path, depth: int) -> None:
        if (folder / "results.md").is_file() and (folder / "benchmark.json").is_file():
            sections.append(benchmark_section(folder))
            return  # its runs/ are summarised by the benchmark page
        if (folder / "manifest.jsonl").is_file():
            sections.append(generation_section(folder, max_images, thumb))
            return
        if (folder / "metrics.json").is_file():
            sections.append(evaluation_section(folder / "metrics.json"))
        if depth < MAX_DEPTH:
            for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                walk(child, depth + 1)

    walk(root, 0)
    return sections


# ------------------------------------------------------------------------------------------------


def render(sections: list[Section], title: str, command: str | None) -> str:
    """The whole HTML page."""

    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    toc = "".join(f"<li><a href='#s{i}'>{esc(s.title)}</a></li>" for i, s in enumerate(sections))
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>", f"<title>{esc(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{esc(title)}</h1>",
             f"<p class='muted'>Generated {esc(now)}"
             + (f" by <code>{esc(command)}</code>" if command else "") + ".</p>", f"<ul>{toc}</ul>"]
    for i, s in enumerate(sections):
        parts += [f"<section class='run' id='s{i}'>", f"<h2>{esc(s.title)}</h2>", *s.body, "</section>"]
    v = versions()
    parts += ["<h2>Environment of this report</h2>",
              "<p class='muted'>Versions where the report was rendered (benchmark pages above list the versions "
              "they ran with).</p>", html_table(["component", "version"], [[k, "" if x is None else x] for k, x in v.items()]),
              "</body></html>"]
    return "\n".join(parts)


def build_report(dirs: list[str | Path], out: str | Path | None = None, title: str = "minority report",
                 max_images: int = 24, thumb: int = 96, command: str | None = None) -> Path:
    """Write one self-contained HTML page for ``dirs``; returns its path (default ``DIRS[0]/report.html``).

    Args:
        dirs: benchmark, generate or evaluate output folders (or folders that contain them).
        out: HTML file to write.
        title: page title.
        max_images: images shown per generation gallery.
        thumb: gallery thumbnail width in pixels.
        command: the command line to print in the page.
    """
    if not dirs:
        raise MinorityError("No folder given: pass one or more benchmark/generate/evaluate output folders.")
    if max_images < 1 or thumb < 8:
        raise MinorityError(f"--max-images must be >= 1 and --thumb >= 8 (got {max_images}, {thumb}).")
    sections = []
    for d in dirs:
        found = find_sections(Path(d).expanduser(), max_images, thumb)
        if not found:
            raise MinorityError(f"{d} holds no benchmark (results.md), generation (manifest.jsonl) or evaluation "
                                "(metrics.json) outputs: pass the folder that `minority benchmark/generate/evaluate` wrote.")
        sections += found
    first = Path(dirs[0]).expanduser()
    path = Path(out) if out else (first if first.is_dir() else first.parent) / "report.html"

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, render(sections, title, command).encode("utf-8"))
    return path


def add_report_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``minority report`` arguments to ``parser``."""
    parser.description = ("Render one self-contained HTML page (tables, grids and plots embedded, exact commands and "
                          "versions) from benchmark, generate or evaluate output folders.")
    parser.add_argument("dirs", nargs="+", metavar="DIR",
                        help="benchmark, generate or evaluate output folders (searched 3 levels deep)")
    parser.add_argument("--out", default=None, metavar="FILE", help="HTML file to write; None = DIR/report.html "
                        "of the first DIR")
    parser.add_argument("--title", default="minority report", help="page title")
    parser.add_argument("--max-images", type=int, default=24, metavar="N", help="images per generation gallery")
    parser.add_argument("--thumb", type=int, default=96, metavar="PX", help="gallery thumbnail width in pixels")
    return parser


def run_report(args: argparse.Namespace) -> int:
    """Run ``minority report`` from parsed arguments; prints the path of the page; returns 0."""

    path = build_report(args.dirs, args.out, args.title, args.max_images, args.thumb, command=invoked_command())
    print(f"Wrote {path}")
    return 0
