"""Calibrate SGMS Tab. 1's FD: what do REAL images score against the minority reference?

Writes two folders of held-out real test images as PNGs (same 28x28 grayscale as the reference) and evaluates
them exactly like a generated arm of ``sgms-table1`` (fd, sfid, precision, recall against
``fashion-mnist:train:minority=0.1``):

* ``typical``: N random test images — what a perfect sampler of the *whole* data distribution scores;
* ``minority``: the N test images with the highest AvgkNN within the test set (EfficientNet-Lite0 space, k=5) —
  roughly what a perfect *minority* sampler scores (the floor, set by sample size and the held-out split).

Usage: python benchmarks/real_fd_floor.py [--n 1000] [--out outputs/real-fd-floor]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from minority.metrics import evaluate
from minority.metrics.cache import FeatureCache
from minority.metrics.features import extract_features, load_extractor
from minority.metrics.references import open_reference, select_minority


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="images per folder")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random 'typical' subset")
    ap.add_argument("--reference", default="fashion-mnist:train:minority=0.1", help="reference spec")
    ap.add_argument("--out", default="outputs/real-fd-floor", help="output folder")
    args = ap.parse_args()
    out = Path(args.out)
    test, _ = open_reference("fashion-mnist:test")
    feats = extract_features(test, load_extractor("efficientnet-lite0", "cpu"), 128, "cpu", False, FeatureCache())
    picks = {"typical": np.random.default_rng(args.seed).choice(len(test), args.n, replace=False),
             "minority": select_minority(feats["features"], args.n / len(test))}
    summary = {}
    for name, idx in picks.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in idx:
            Image.fromarray(test.load(int(i))[:, :, 0]).save(folder / f"test_{int(i):05d}.png")
        res = evaluate(folder, reference=args.reference, metrics="fd,sfid,precision,recall",
                       out=out / f"{name}.json", progress=False)
        summary[name] = {m: res["metrics"][m]["value"] for m in res["metrics"]}
        print(name, json.dumps(summary[name]))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
