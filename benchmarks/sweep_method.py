"""Hyper-parameter sweep of one method against ``ddim`` on the same prompts and seeds (issue 7's investigation).

For each setting of the grid it generates "a photo of a {class}" × seeds, then reports the classifier
alignment, AvgkNN to the real test set (in ``--features`` space; ``fashion-classifier`` is fast), optionally
the PF-ODE likelihood (bits/dim, loose tolerances), and the mean absolute pixel change from ``ddim``'s image of
the same prompt and seed. Prints a markdown table and writes ``sweep.csv`` to ``--out``.

    python benchmarks/sweep_method.py --method minority-prompt --grid lr=0.01,0.05 opt_every=1,5 --seeds 4
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from minority.metrics.cli import key_value
from PIL import Image

from minority.metrics import evaluate
from minority.pipelines.text2image import MinorityPipeline
from minority.runs.generate import GenerateConfig, run_generate
from minority.runs.io import read_jsonl


def _images(folder: Path) -> dict[tuple[int, int], np.ndarray]:
    return {(e["prompt_index"], e["seed"]): np.asarray(Image.open(folder / e["file"]), np.float32) / 255.0
            for e in read_jsonl(folder / "manifest.jsonl")}


def main() -> None:
    ap = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__)
    ap.add_argument("--model", default="fashion-sd")
    ap.add_argument("--method", default="minority-prompt")
    ap.add_argument("--grid", nargs="*", default=[], help="NAME=V1,V2,... (cartesian product)")
    ap.add_argument("--fixed", nargs="*", default=[], help="NAME=V parameters of every setting")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--features", default="fashion-classifier")
    ap.add_argument("--likelihood", action="store_true", help="also the PF-ODE bits/dim (slower)")
    ap.add_argument("--out", default="outputs/sweep")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from minority.data.captions import CLASS_NAMES

    prompts = tuple(f"a photo of a {n}" for n in CLASS_NAMES[: a.classes])
    seeds = tuple(range(a.seeds))
    out = Path(a.out)
    pipe = MinorityPipeline.from_pretrained(a.model)
    fixed = dict(key_value(kv) for kv in a.fixed)
    names = [g.split("=", 1)[0] for g in a.grid]
    values = [[key_value(f"{n}={v}")[1] for v in g.split("=", 1)[1].split(",")] for n, g in zip(names, a.grid, strict=True)]
    settings = [("ddim", {})] + [(a.method, {**fixed, **dict(zip(names, combo, strict=True))})
                                 for combo in itertools.product(*values)]
    metrics = ["alignment", "avgknn"] + (["likelihood"] if a.likelihood else [])
    rows, base = [], None
    for method, params in settings:
        label = method + ("" if not params else " " + " ".join(f"{k}={v}" for k, v in params.items()))
        folder = out / label.replace(" ", "_").replace("=", "-")
        t0 = time.perf_counter()
        run_generate(GenerateConfig(prompts=prompts, model=a.model, method=method, seeds=seeds, steps=a.steps,
                                    guidance=a.guidance, params=params, batch_size=len(seeds) * 2, device="cpu",
                                    out=str(folder), overwrite=True), pipe=pipe, progress=False)
        seconds = time.perf_counter() - t0
        res = evaluate(folder, reference="fashion-mnist:test", metrics=metrics, features=a.features, progress=False,
                       likelihood_model=a.model, likelihood_rtol=1e-3, likelihood_atol=1e-3)
        imgs = _images(folder)
        if base is None:
            base = imgs
        delta = float(np.mean([np.abs(imgs[k] - base[k]).mean() for k in imgs]))
        row = {"setting": label, "seconds": round(seconds, 1), "mean_abs_delta_vs_ddim": round(delta, 4)}
        for m, e in res["metrics"].items():
            row[m] = round(e["value"], 4)
            if e.get("ci95"):
                row[m + "_ci95"] = "–".join(f"{x:.3f}" for x in e["ci95"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")


if __name__ == "__main__":
    main()
