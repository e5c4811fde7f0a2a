"""``minority sweep``: choose a model's per-method defaults by a documented sweep on held-out prompts and seeds.

Every combination of the ``--grid`` values of one method runs beside the base sampler (``ddim``; ``ancestral`` on
pixel models) through the benchmark machinery (same prompts and seeds for every arm, the evaluation suite against
the reference), on prompts and seeds that the reported benchmarks do not use (template ``"a picture of {a}"``,
seeds 1000–1007 by default; the benchmarks use ``"a photo of {a}"`` and seeds 0–99). The rule (issue 18):

* feasible: alignment ≥ ``alignment_ratio`` × the base's (95%) and precision ≥ the lower end of the base's 95% CI;
* among the feasible settings, the largest minority effect
  ``score = (L − L_base)/L_base + (K − K_base)/K_base`` with L the likelihood in bits/dim (higher = rarer) and K the
  AvgkNN distance (higher = rarer); on pixel models without a likelihood column only K counts;
* a setting is chosen only when its score is positive; otherwise the method keeps its own defaults.

Writes the benchmark outputs (``results.md``/``results.csv``, grids, ``benchmark.json``) plus ``sweep.json`` and
``sweep.md`` (every setting, its feasibility and score, the choice); ``--install`` writes the choice into the model
folder's ``model_index.json`` (``minority_defaults.methods.<method>``), where generation picks it up.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from minority.benchmark.config import BenchmarkConfig, parse_seed_option
from minority.benchmark.protocols import PROMPT_TEMPLATE, Arm, EvalGroup, Protocol, Size
from minority.benchmark.runner import benchmark
from minority.benchmark.tables import read_csv
from minority.embedded import model_kind, resolve_embedded
from minority.errors import MinorityError
from minority.methods import make_method
from minority.metrics.catalog import key_value
from minority.pipelines.loading import resolve_model
from minority.runs.io import atomic_write_json

HELD_OUT_TEMPLATE = "a picture of {a}"
HELD_OUT_SEEDS = "1000-1007"
BENCHMARK_SEEDS = range(100)  # mp-table1/2 use 0..49, mp-table3 0..15, sgms-table1 0..99
TEXT_METRICS = ("alignment", "precision", "likelihood", "png-bpp", "avgknn")
PIXEL_METRICS = ("alignment", "precision", "avgknn")


@dataclass(frozen=True)
class SweepConfig:
    """One ``minority sweep`` run."""

    model: str
    method: str
    grid: dict = field(default_factory=dict)  # hyperparameter -> tuple of values
    out: str | None = None
    prompts: int = 10
    prompt_template: str = HELD_OUT_TEMPLATE
    seeds: str = HELD_OUT_SEEDS
    steps: int | None = None
    guidance: float | None = None
    base: str | None = None  # None = ddim (text) / ancestral (pixel)
    alignment_ratio: float = 0.95
    reference: str | None = None
    features: str = "efficientnet-lite0"
    settings: dict = field(default_factory=dict)
    batch_size: int = 8
    threads: int = 0
    device: str = "auto"
    resume: bool = False
    install: bool = False


def grid_arms(method: str, grid: dict) -> list[Arm]:
    """One arm per combination of ``grid`` (``{"lr": (0.01, 0.05), ...}``), named ``method (k=v, ...)``; every
    combination is checked by the method itself (a bad name or value is an error before any image is drawn)."""
    if not grid:
        raise MinorityError("--grid is empty: give at least one KEY=V1,V2,... of the method's hyperparameters.")
    keys = sorted(grid)
    arms = []
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values))
        make_method(method, params)
        arms.append(Arm(f"{method} ({', '.join(f'{k}={v}' for k, v in params.items())})", method, params))
    return arms


def _num(row: dict, key: str) -> float | None:
    v = row.get(key, "")
    return None if v in ("", None) else float(v)


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.4g}"


def choose(rows: list[dict], base: str, alignment_ratio: float = 0.95) -> tuple[list[dict], dict | None]:
    """Apply the rule to benchmark ``rows`` (``results.csv`` rows, the base arm named ``base``).

    Returns (one verdict per non-base row: ``arm``, ``params``, ``feasible``, ``why``, ``score``; the chosen verdict
    or None)."""
    ref = next(r for r in rows if r["arm"] == base)
    a0, p_low = _num(ref, "alignment"), _num(ref, "precision_ci_low")
    l0, k0 = _num(ref, "likelihood"), _num(ref, "avgknn")
    verdicts = []
    for r in rows:
        if r["arm"] == base:
            continue
        why = []
        a, p = _num(r, "alignment"), _num(r, "precision")
        if a0 is not None and (a is None or a < alignment_ratio * a0):
            why.append(f"alignment {_fmt(a)} < {alignment_ratio:g} × {a0:.4g}")
        if p_low is not None and (p is None or p < p_low):
            why.append(f"precision {_fmt(p)} below the base's CI ({p_low:.4g})")
        score = 0.0
        for v0, key in ((l0, "likelihood"), (k0, "avgknn")):
            v = _num(r, key)
            if v0 not in (None, 0.0) and v is not None:
                score += (v - v0) / abs(v0)
        verdicts.append({"arm": r["arm"], "params": json.loads(r.get("params") or "{}"), "feasible": not why,
                         "why": "; ".join(why), "score": score})
    feasible = [v for v in verdicts if v["feasible"] and v["score"] > 0]
    return verdicts, max(feasible, key=lambda v: v["score"]) if feasible else None


def held_out(template: str | None, seeds: list[int]) -> bool:
    """Whether the prompts and seeds differ from the reported benchmarks' (template and seed range); ``None`` =
    a pixel model's class labels, where only the seeds can differ."""
    return template != PROMPT_TEMPLATE and not any(s in BENCHMARK_SEEDS for s in seeds)


def install_defaults(model: str, method: str, params: dict) -> Path:
    """Write ``params`` as ``minority_defaults.methods.<method>`` into the model folder's ``model_index.json``."""
    folder = resolve_embedded(model) or Path(model)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise MinorityError(f"--install writes into a model folder's model_index.json, and {model!r} has none "
                            "(hub ids are read-only here): pass the folder, or drop --install.")
    index = json.loads(index_path.read_text())
    defaults = index.setdefault("minority_defaults", {})
    defaults.setdefault("methods", {})[method] = params
    atomic_write_json(index_path, index)
    return index_path


def run_sweep(cfg: SweepConfig) -> dict:
    """Run the sweep of ``cfg``; returns the ``sweep.json`` dictionary."""
    # long: build the protocol, run it, apply the rule, write the report, install: one pass in order
    if not 0 < cfg.alignment_ratio <= 1:
        raise MinorityError(f"--alignment-ratio must be in (0, 1] (got {cfg.alignment_ratio}).")
    pixel = model_kind(resolve_model(cfg.model)[0]) == "ddpm"  # from the folder's files, without loading weights
    base = cfg.base or ("ancestral" if pixel else "ddim")
    arms = (Arm(base, base), *grid_arms(cfg.method, cfg.grid))
    seeds = parse_seed_option(cfg.seeds, 8)
    fair = held_out(None if pixel else cfg.prompt_template, seeds)
    if cfg.install and not fair:
        raise MinorityError("--install needs held-out prompts and seeds (a template other than 'a photo of {a}', "
                            "seeds >= 100): the benchmarks would otherwise report the data the defaults were "
                            "chosen on.")
    protocol = Protocol(
        name="sweep", title=f"Per-model defaults sweep: {cfg.method} on {cfg.model}", source="issue 18 (this project)",
        kind="pixel" if pixel else "text", arms=arms,
        groups=(EvalGroup("main", PIXEL_METRICS if pixel else TEXT_METRICS, "fashion-mnist:test"),),
        full=Size(prompts=cfg.prompts, seeds=len(seeds)), quick=Size(prompts=cfg.prompts, seeds=len(seeds)))
    out = cfg.out or f"outputs/sweep/{Path(cfg.model).name}-{cfg.method}"
    bcfg = BenchmarkConfig(protocol="sweep", out=out, model=cfg.model, prompts=cfg.prompts, seeds=cfg.seeds,
                           steps=cfg.steps, guidance=cfg.guidance, device=cfg.device, reference=cfg.reference,
                           features=cfg.features, settings=dict(cfg.settings), batch_size=cfg.batch_size,
                           threads=cfg.threads, resume=cfg.resume, overwrite=not cfg.resume,
                           prompt_template=None if pixel else cfg.prompt_template)
    folder = benchmark(bcfg, protocol=protocol)
    rows = read_csv(folder / "results.csv")
    verdicts, chosen = choose(rows, base, cfg.alignment_ratio)
    result = {"model": cfg.model, "method": cfg.method, "base": base, "grid": {k: list(v) for k, v in cfg.grid.items()},
              "prompt_template": None if pixel else cfg.prompt_template, "prompts": cfg.prompts, "seeds": seeds,
              "steps": cfg.steps, "held_out": fair, "alignment_ratio": cfg.alignment_ratio, "verdicts": verdicts,
              "chosen": chosen["params"] if chosen else None, "installed": None, "folder": str(folder)}
    if cfg.install and chosen:
        result["installed"] = str(install_defaults(cfg.model, cfg.method, chosen["params"]))
    atomic_write_json(folder / "sweep.json", result)
    (folder / "sweep.md").write_text(sweep_markdown(result, rows))
    return result


def sweep_markdown(result: dict, rows: list[dict]) -> str:
    """The sweep's table (one row per setting) and its verdict."""
    by_arm = {r["arm"]: r for r in rows}
    cols = [c for c in ("alignment", "precision", "likelihood", "png-bpp", "avgknn") if c in rows[0]]
    lines = [f"# {result['method']} defaults sweep on {result['model']}", "",
             f"Prompts: {result['prompts']} classes × template {result['prompt_template']!r}; seeds "
             f"{result['seeds'][0]}–{result['seeds'][-1]} ({len(result['seeds'])} per prompt); base `{result['base']}`."
             + ("" if result["held_out"] else " **Not held out: these prompts/seeds overlap the reported benchmarks.**"),
             "", f"Rule: alignment ≥ {result['alignment_ratio']:g} × base, precision ≥ the base's 95% CI low; "
             "maximise (L − L₀)/L₀ + (K − K₀)/K₀ (L likelihood bits/dim, K AvgkNN; higher = rarer).", "",
             "| setting | " + " | ".join(cols) + " | feasible | score |", "|---|" + "---|" * (len(cols) + 2)]
    base = by_arm[result["base"]]
    lines.append(f"| {result['base']} (base) | " + " | ".join(_cell(base, c) for c in cols) + " | – | 0 |")
    for v in sorted(result["verdicts"], key=lambda v: -v["score"]):
        r = by_arm[v["arm"]]
        ok = "yes" if v["feasible"] else f"no ({v['why']})"
        lines.append(f"| {v['arm']} | " + " | ".join(_cell(r, c) for c in cols) + f" | {ok} | {v['score']:+.4f} |")
    chosen = result["chosen"]
    lines += ["", f"**Chosen:** `{json.dumps(chosen)}`" if chosen else
              "**Chosen:** none (no feasible setting beats the base); the method keeps its own defaults."]
    if result.get("installed"):
        lines.append(f"Installed into `{result['installed']}` (minority_defaults.methods.{result['method']}).")
    return "\n".join(lines) + "\n"


def _cell(row: dict, col: str) -> str:
    v = row.get(col, "")
    if v in ("", None):
        return "–"
    lo, hi = row.get(f"{col}_ci_low", ""), row.get(f"{col}_ci_high", "")
    return f"{float(v):.4g}" + (f" [{float(lo):.4g}, {float(hi):.4g}]" if lo not in ("", None) and hi not in ("", None) else "")


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """``minority sweep`` flags (defaults shown in ``--help``)."""
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--model", required=True, help="model name, folder or hub id")
    p.add_argument("--method", required=True, help="the method whose defaults are swept (e.g. minority-prompt)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="hyperparameter values to try, repeatable; every combination runs")
    p.add_argument("--prompts", type=int, default=10, help="classes (default: %(default)s)")
    p.add_argument("--prompt-template", default=HELD_OUT_TEMPLATE,
                   help="text models: held-out class prompt with {a} or {n} (default: %(default)r)")
    p.add_argument("--seeds", default=HELD_OUT_SEEDS, help="held-out seeds per prompt (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: each method's / the model's)")
    p.add_argument("--base", default=None, help="base sampler (default: ddim; pixel models ancestral)")
    p.add_argument("--alignment-ratio", type=float, default=0.95, help="feasible: alignment >= this × base's (default: %(default)s)")
    p.add_argument("--reference", default=None, help="reference set (default: fashion-mnist:test)")
    p.add_argument("--features", default="efficientnet-lite0", help="feature extractor (default: %(default)s)")
    p.add_argument("--set", dest="settings", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="evaluation setting, repeatable (e.g. likelihood_probes=1)")
    p.add_argument("--batch-size", type=int, default=8, help="images per pipeline call (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    p.add_argument("--out", default=None, help="output folder (default: outputs/sweep/MODEL-METHOD)")
    p.add_argument("--resume", action="store_true", help="reuse the finished arms in --out")
    p.add_argument("--install", action="store_true",
                   help="write the chosen setting into the model folder's model_index.json")
    p.set_defaults(func=run_sweep_command)


def parse_grid(items: list[str]) -> dict:
    """``["lr=0.01,0.05", "opt_every=1,2"]`` -> ``{"lr": (0.01, 0.05), "opt_every": (1, 2)}`` (values parsed as JSON)."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise MinorityError(f"--grid expects KEY=V1,V2,... (got {item!r}).")
        grid[key.strip().replace("-", "_")] = tuple(key_value(f"x={v.strip()}")[1] for v in values.split(","))
    return grid


def run_sweep_command(args: argparse.Namespace) -> int:
    cfg = SweepConfig(model=args.model, method=args.method, grid=parse_grid(args.grid), out=args.out,
                      prompts=args.prompts, prompt_template=args.prompt_template, seeds=args.seeds, steps=args.steps,
                      guidance=args.guidance, base=args.base, alignment_ratio=args.alignment_ratio,
                      reference=args.reference, features=args.features, settings=dict(args.settings),
                      batch_size=args.batch_size, threads=args.threads, device=args.device, resume=args.resume,
                      install=args.install)
    result = run_sweep(cfg)
    print(f"{cfg.method} on {cfg.model}: chosen {json.dumps(result['chosen'])}; table in {Path(result['folder']) / 'sweep.md'}"
          + (f"; installed into {result['installed']}" if result["installed"] else ""))
    return 0


