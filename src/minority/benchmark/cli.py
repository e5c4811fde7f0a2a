"""``minority benchmark PROTOCOL``: argparse wiring for :func:`minority.benchmark.benchmark`.

The main CLI calls :func:`add_benchmark_arguments` on the sub-parser and :func:`run_benchmark` with the
parsed arguments.
"""

from __future__ import annotations

import argparse
import re

from minority.benchmark.config import BenchmarkConfig
from minority.benchmark.protocols import PROTOCOLS
from minority.benchmark.runner import benchmark
from minority.errors import MinorityError
from minority.metrics.catalog import key_value as _key_value  # one KEY=VALUE parser for every command


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``minority benchmark`` arguments to ``parser``."""
    # long: one add_argument per flag, in --help order
    lines = [f"  {p.name:12s} {p.title} [{', '.join(a.name for a in p.arms)}]" for p in PROTOCOLS.values()]
    parser.description = ("Re-run a paper table or the performance comparison: every method with identical prompts "
                          "and seeds, evaluated with the evaluation suite; writes results.csv, results.md (mean ± 95% "
                          "CI), PNG plots, labelled grids and benchmark.json.\n\nProtocols:\n" + "\n".join(lines))
    parser.add_argument("protocol", choices=list(PROTOCOLS), metavar="PROTOCOL",
                        help=f"one of {', '.join(PROTOCOLS)}")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder; None = outputs/benchmark/PROTOCOL[-quick]")
    parser.add_argument("--quick", action="store_true", default=False,
                        help="smoke size (few prompts and seeds, 10 steps, a subset of the reference set; "
                             "under 10 minutes on 2 CPU cores)")
    parser.add_argument("--model", default=None, metavar="M",
                        help="model name, folder or hub id; perf: a comma-separated list of backbones; None = the "
                             "protocol's (mp-*: fashion-sd, or tiny-random-sd until it ships; sgms-table1: "
                             "fashion-ddpm; perf: the default model, tiny-random-sd, tiny-random-sdxl) "
                             "")
    parser.add_argument("--prompts", type=int, default=None, metavar="N",
                        help="prompts (text models: 'a photo of a <class>' for the first N Fashion-MNIST classes) or "
                             "classes (pixel models); None = protocol size: 10 (perf 4; --quick 2)")
    parser.add_argument("--seeds", default=None, metavar="S",
                        help="seeds per prompt, shared by every method: a count S (seeds 0..S-1) or a list such as "
                             "0-7 or 3,5; None = protocol size (mp-table1/2 50, mp-table3 16, sgms-table1 100, "
                             "perf 4; --quick 4)")
    parser.add_argument("--prompt-template", default=None, metavar="TEXT",
                        help="text models: the class prompt with {a} (article + class) or {n} (class); None = "
                             "'a photo of {a}'")
    parser.add_argument("--steps", type=int, default=None, metavar="T",
                        help="sampling steps; None = the model family's default (SD 50, pixel 250), --quick 10 "
                             "(sgms-table1 20)")
    parser.add_argument("--guidance", type=float, default=None, metavar="W",
                        help="CFG scale for every method; None = each method's/family's default")
    parser.add_argument("--methods", default=None, metavar="LIST",
                        help="comma-separated subset of the protocol's methods; None = all")
    parser.add_argument("--param", dest="params", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                        help="method hyperparameter for every method that has it, repeatable (e.g. opt_steps=1, "
                             "distance=l2)")
    parser.add_argument("--reference", default=None, metavar="DIR_OR_DATASET",
                        help="replace the protocol's reference set (fashion-mnist:test; sgms-table1 "
                             "fashion-mnist:train, its quality metrics with :minority=0.1 appended) by a folder or "
                             "dataset spec")
    parser.add_argument("--features", default="efficientnet-lite0", metavar="NAME",
                        help="feature extractor of the reference-based metrics")
    parser.add_argument("--clip-weights", default=None, metavar="DIR",
                        help="local CLIP ViT-L/14 folder for CLIPScore; None = use the Hugging Face cache if it has "
                             "it, else skip CLIPScore (said in results.md)")
    parser.add_argument("--set", dest="settings", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                        help="evaluation setting passed to minority evaluate, repeatable (e.g. likelihood_probes=2, "
                             "ibs_features=dino-vitb8)")
    parser.add_argument("--device", default="auto", metavar="D", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--batch-size", type=int, default=4, metavar="B",
                        help="images per pipeline call (generation batches; perf: per timed call); larger is faster "
                             "for the small embedded models on CPU")
    parser.add_argument("--max-batch", type=int, default=64, metavar="B",
                        help="perf on CUDA: largest batch tried for the images/s measurement")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="torch CPU threads; 0 = leave torch's setting")
    parser.add_argument("--grid-rows", type=int, default=8, metavar="N",
                        help="rows (prompt, seed pairs) in each image grid")
    parser.add_argument("--resume", action="store_true", default=False,
                        help="reuse the finished generations and evaluations of an earlier run in --out "
                             "")
    parser.add_argument("--overwrite", action="store_true", default=False,
                        help="replace an earlier benchmark in --out")
    parser.add_argument("--deterministic", action="store_true", default=False,
                        help="deterministic GPU kernels for the generations (bit-identical reruns on CUDA; slower)")
    parser.add_argument("--generate-only", action="store_true", default=False,
                        help="do only the work that needs the diffusion model: generate every arm and compute the "
                             "model-based metrics (likelihood) into the cache, then stop without tables; a later "
                             "run with --resume (e.g. on another machine, with OUT and the cache folder copied) "
                             "evaluates against the reference and writes the results")
    return parser


def config_from_args(args: argparse.Namespace) -> BenchmarkConfig:
    """The :class:`BenchmarkConfig` of parsed ``minority benchmark`` arguments."""
    # commas inside parentheses belong to an arm's name ("boost-skip (γ=2.5, Δt=3)")
    methods = tuple(m.strip() for m in re.split(r",(?![^()]*\))", args.methods or "") if m.strip())
    return BenchmarkConfig(
        protocol=args.protocol, out=args.out, model=args.model, prompts=args.prompts, seeds=args.seeds,
        steps=args.steps, guidance=args.guidance, device=args.device, quick=args.quick, reference=args.reference,
        features=args.features, methods=methods, params=dict(args.params or []), settings=dict(args.settings or []),
        batch_size=args.batch_size, threads=args.threads, clip_weights=args.clip_weights, grid_rows=args.grid_rows,
        max_batch=args.max_batch, resume=args.resume, overwrite=args.overwrite,
        generate_only=args.generate_only, deterministic=args.deterministic, prompt_template=args.prompt_template,
    )


def run_benchmark(args: argparse.Namespace) -> int:
    """Run ``minority benchmark`` from parsed arguments; prints where the results are; returns 0."""

    cfg = config_from_args(args)
    if "likelihood_fn" in cfg.settings:
        raise MinorityError("likelihood_fn cannot be set from the command line: use likelihood_model=DIR.")
    out = benchmark(cfg)
    if cfg.generate_only:
        print(f"Generated every arm in {out / 'runs'}; run the same command with --resume instead of "
              "--generate-only to evaluate and write the results")
        return 0
    print(f"Wrote {out / 'results.md'}, {out / 'results.csv'} and plots/grids in {out} "
          f"(HTML: minority report {out})")
    return 0
