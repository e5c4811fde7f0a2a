"""``minority evaluate``: argparse wiring for :func:`minority.runs.model_scores.evaluate` (the metrics suite).

The main CLI calls :func:`add_evaluate_arguments` on the sub-parser and :func:`run_evaluate` with the
parsed arguments. Help texts show every default (``ArgumentDefaultsHelpFormatter``-compatible).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from minority.errors import MinorityError
from minority.metrics.catalog import DEFAULT_METRICS, DEFAULT_SETTINGS, METRICS, key_value
from minority.metrics.results import format_table, output_paths
from minority.runs.model_scores import evaluate


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``minority evaluate`` flags to ``parser``."""
    parser.add_argument("--images", required=True, metavar="DIR",
                        help="folder of images, or a `minority generate` output folder (its manifest.jsonl gives "
                             "prompts and groups) (required; default: %(default)s)")
    parser.add_argument("--reference", default=None, metavar="DIR_OR_DATASET",
                        help="reference images: a folder, fashion-mnist:train or fashion-mnist:test, optionally with "
                             ":minority=F (the fraction F of reference images with the highest AvgkNN), :limit=N, "
                             ":pad=S (default: %(default)s)")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS), metavar="LIST",
                        help=f"comma-separated metrics, or 'all'; available: {', '.join(METRICS)} (default: %(default)s)")
    parser.add_argument("--features", default="efficientnet-lite0", metavar="NAME",
                        help="feature extractor for the reference-based metrics: efficientnet-lite0 (offline), "
                             "fashion-classifier, inception, resnet50, dino-vitb8, clip-vit-l14 (default: %(default)s)")
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="local weights of the --features extractor (file or folder), for hub extractors "
                             "without internet (default: %(default)s)")
    parser.add_argument("--out", default=None, metavar="F",
                        help="metrics.json path or folder; per_image.csv is written beside it; None = "
                             "IMAGES/metrics.json (default: %(default)s)")
    parser.add_argument("--device", default="cpu", metavar="D", help="torch device (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, metavar="B",
                        help="images per forward pass (default: %(default)s)")
    parser.add_argument("--skip-bad", action="store_true", default=False,
                        help="leave out unreadable images (listed in metrics.json) instead of stopping "
                             "(default: %(default)s)")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="feature cache folder; None = $MINORITY_CACHE_DIR or ~/.cache/minority/features "
                             "(default: %(default)s)")
    parser.add_argument("--no-cache", action="store_true", default=False,
                        help="do not read or write the feature cache (default: %(default)s)")
    parser.add_argument("--set", dest="settings", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                        help="other settings, repeatable: "
                             + ", ".join(f"{k}={v}" for k, v in DEFAULT_SETTINGS.items()
                                         if k not in ("weights", "cache", "cache_dir", "progress", "likelihood_fn"))
                             + " (default: %(default)s)")
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``minority evaluate`` from parsed arguments; prints the table; returns the exit status (0)."""
    settings = dict(args.settings or [])
    if "likelihood_fn" in settings:
        raise MinorityError("likelihood_fn cannot be set from the command line: use likelihood_model=DIR")
    settings.update(weights=args.weights, cache=not args.no_cache, cache_dir=args.cache_dir)
    out = args.out if args.out is not None else Path(args.images) / "metrics.json"
    result = evaluate(args.images, reference=args.reference, metrics=args.metrics, features=args.features, out=out,
                      device=args.device, batch_size=args.batch_size, skip_bad=args.skip_bad, **settings)
    print(format_table(result))
    json_path, csv_path = output_paths(out)
    print(f"wrote {json_path} and {csv_path}")
    return 0
