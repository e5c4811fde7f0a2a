"""``minority generate``: prompts × seeds with one method into a folder (images, manifest, config).

The parser is built for the chosen ``--method``: its hyperparameters become flags typed by that method alone
(:mod:`minority.cli.method_flags`), so ``minority generate --method NAME --help`` lists exactly NAME's flags.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from minority.cli.method_flags import add_method_arguments, method_params
from minority.errors import MinorityError
from minority.methods import ALIASES, METHODS, get_method, make_method
from minority.pipelines.families import defaults_summary
from minority.runs.distributed import launched_distributed
from minority.runs.generate import GenerateConfig, GenerationInterrupted, generate_to_folder, preflight
from minority.runs.launch import argv_from_args, launch_processes
from minority.runs.lock import lock_for_launch
from minority.runs.prompts import config_fields, read_prompts_file
from minority.runs.seeds import parse_seeds, seed_run

HELP = "generate images with a minority or baseline sampler"


def add_generate_arguments(p: argparse.ArgumentParser, method: str) -> None:
    """The generate options, plus the hyperparameter flags of ``method`` (an unknown name keeps none)."""
    p.description = (
        "Generate images for prompts × seeds into OUT/images/<prompt_index>_<seed>.png with manifest.jsonl and "
        "config.json.\n\nMethods (`minority generate --method NAME --help` lists NAME's options):\n"
        + "\n".join(f"  {n:16s} {m.summary}" for n, m in sorted(METHODS.items())))
    p.add_argument("prompts", nargs="*", help="prompts (each gets every seed)")
    _add_prompt_file_arguments(p)
    p.add_argument("--model", default=None, help="embedded model name (`minority models`), diffusers folder, hub id or "
                   "single-file SD/SDXL .safetensors (default: fashion-sd, or the tiny random pipeline until it ships)")
    p.add_argument("--config", default=None, dest="model_config", metavar="FOLDER_OR_ID",
                   help="base model (diffusers folder or hub id) whose configuration a single-file .safetensors "
                   "--model loads with; needed offline (default: diffusers' guess from the checkpoint)")
    p.add_argument("--lightning-unet", default=None, help="SDXL-Lightning UNet .safetensors (path or repo_id/file) "
                   "loaded into an SDXL base --model")
    p.add_argument("--class-label", type=int, action="append", default=None, dest="class_labels",
                   help="pixel-space class-conditional models: class label (repeat for several; none = unconditional)")
    p.add_argument("--method", default="ddim", choices=sorted([*METHODS, *ALIASES]),
                   help="sampling method (pixel-space models: ancestral, ddim, sgms)")
    p.add_argument("--seed", type=int, default=0, help="first seed; images use seeds SEED..SEED+N-1")
    p.add_argument("--seeds", default=None, help="explicit seeds, e.g. 0-7 or 0,3,5 (overrides --seed/--images-per-prompt)")
    p.add_argument("--images-per-prompt", type=int, default=1, help="images per prompt N")
    p.add_argument("--steps", type=int, default=None, help=f"sampling steps T (default: the model's: "
                   f"{defaults_summary('steps')})")
    presets = "; ".join(f"{n}: {', '.join(m.presets)}" for n, m in sorted(METHODS.items()) if m.presets)
    p.add_argument("--preset", default=None, metavar="NAME",
                   help=f"the paper's settings for --method ({presets}): hyperparameters and, where the paper fixes "
                   "them, --steps / --spacing; flags given explicitly win")
    p.add_argument("--spacing", choices=("scheduler", "adm"), default=None,
                   help="timestep grid: scheduler (its own set_timesteps spacing) or adm (guided-diffusion's "
                   "timestep_respacing, e.g. 250 of 1000: the SGMS / Boost-and-Skip papers' grid; pixel models) "
                   "(default: scheduler)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale w; 1 = no CFG (default: the model's: "
                   f"{defaults_summary('guidance')}; cfgpp λ 0.6)")
    p.add_argument("--negative-prompt", default=None,
                   help="unconditional-branch text (default: \"\"; SDXL zeros; null-prompt: \"commonly-looking\")")
    p.add_argument("--height", type=int, default=None, help="image height in pixels (default: the model's native size)")
    p.add_argument("--width", type=int, default=None, help="image width in pixels (default: the model's native size)")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward batch")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="model precision")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic GPU kernels, so that a rerun is bit-identical on CUDA (slower; CPU runs are "
                        "already identical run to run)")
    p.add_argument("--out", default="outputs/generate", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    p.add_argument("--resume", action="store_true",
                   help="finish the run in --out: keep its complete images, redo missing or damaged ones (same settings)")
    p.add_argument("--num-processes", type=int, default=1, metavar="N",
                   help="run N processes via `accelerate launch` (one per GPU; on CPU, gloo processes)")
    method = ALIASES.get(method, method)
    dests = add_method_arguments(p, METHODS[method]) if method in METHODS else {}
    p.set_defaults(func=run_generate, param_dests=dests, generate_parser=p)


def _add_prompt_file_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("prompt files (dataset-scale runs)")
    src.add_argument("--prompts-file", help="prompts: .txt (one per line, # comments), .jsonl (one object per line: "
                     "prompt, optional seed, negative_prompt, class_label, id) or MS-COCO captions .json")
    src.add_argument("--prompts-format", default=None, choices=["text", "jsonl", "coco"],
                     help="format of --prompts-file (default: from the extension, else the content)")
    src.add_argument("--sample", type=int, default=None, metavar="N",
                     help="a random subset of N prompts of the file (file order kept), e.g. 10000 COCO captions")
    src.add_argument("--sample-seed", type=int, default=0, help="seed of the --sample draw")
    src.add_argument("--offset", type=int, default=0, help="skip the first OFFSET prompts of the file (after --sample)")
    src.add_argument("--limit", type=int, default=None, help="use at most LIMIT prompts of the file (after --offset)")


def config_from_args(args: argparse.Namespace) -> GenerateConfig:
    """The run's :class:`GenerateConfig` from parsed flags (seeds, prompts file and method checked here)."""
    if args.num_processes < 1:
        raise MinorityError(f"--num-processes must be >= 1 (got {args.num_processes}).")
    records = []
    if args.prompts_file:
        records = read_prompts_file(args.prompts_file, limit=args.limit, offset=args.offset, sample=args.sample,
                                    sample_seed=args.sample_seed, fmt=args.prompts_format)
    elif args.sample is not None or args.limit is not None or args.offset:
        raise MinorityError("--sample, --offset and --limit select prompts of a --prompts-file: pass one.")
    seeds = parse_seeds(args.seeds) if args.seeds else seed_run(args.seed, args.images_per_prompt)
    fields, run = get_method(args.method).preset(args.preset) if args.preset else ({}, {})
    given = {**fields, **method_params(args, args.param_dests)}  # a preset's values, explicit flags over them
    method = make_method(args.method, given)  # the flags' one destination
    source = {}
    if args.prompts_file:
        source = {"file": str(args.prompts_file), "format": args.prompts_format, "sample": args.sample,
                  "sample_seed": args.sample_seed, "offset": args.offset, "limit": args.limit, "count": len(records)}
    return GenerateConfig(
        model=args.model, method=method, seeds=tuple(seeds), steps=args.steps if args.steps is not None else run.get("steps"),
        spacing=args.spacing or run.get("spacing", "scheduler"), preset=args.preset,
        guidance=args.guidance, negative_prompt=args.negative_prompt, height=args.height, width=args.width,
        batch_size=args.batch_size, device=args.device, dtype=args.dtype, out=args.out,
        lightning_unet=args.lightning_unet, model_config=args.model_config, overwrite=args.overwrite,
        resume=args.resume, prompts_source=source, deterministic=args.deterministic, given_params=tuple(sorted(given)),
        **config_fields(records, tuple(args.prompts), tuple(args.class_labels or ())),
    )


def run_generate(args: argparse.Namespace) -> int:
    parser = args.generate_parser
    cfg = config_from_args(args)
    if args.num_processes > 1 and not launched_distributed():
        preflight(cfg)  # bad input: one error line here, not one per process
        script = (["-v"] if getattr(args, "verbose", False) else []) + ["generate"]
        with lock_for_launch(cfg.out):  # held for the ranks (they get its token)
            return launch_processes(args.num_processes,
                                    script + argv_from_args(parser, args, drop=("num_processes",)), device=args.device)
    world = os.environ.get("WORLD_SIZE", "1") if launched_distributed() else "1"
    again = argv_from_args(parser, args, drop=("overwrite", "resume", "num_processes"))
    again += ["--resume"] + (["--num-processes", world] if world != "1" else [])
    try:
        result = generate_to_folder(cfg, resume_command=shlex.join(["minority", "generate", *again]))
    except GenerationInterrupted as err:
        if os.environ.get("RANK", "0") != "0":  # the main process says how to resume
            return err.exit_code
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code  # 130 after Ctrl-C, 143 after SIGTERM
    if result.rank == 0:
        print(result.summary())
    return 0
