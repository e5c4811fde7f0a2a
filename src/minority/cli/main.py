"""``minority`` command line: generate, models, demo (``make run``), evaluate, train, ...

Every command maps to one frozen dataclass written as ``config.json`` beside its outputs; every flag
shows its default in ``--help``. Bad input ends with one ``error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from minority.errors import MinorityError

log = logging.getLogger("minority")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows ``(default: ...)`` for every option (once) and keeps description line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or "%(default)" in text or "(default" in text:
            return text  # positional, or the help states its default itself
        if action.default is None and "default" not in text and action.option_strings:
            return text + " (default: none)"
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: <problem> (see `minority <cmd> --help`)``, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _kebab(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_method_arguments(parser: argparse.ArgumentParser) -> dict[str, str]:
    """One ``--kebab-case`` flag per method hyperparameter (SPEC §2), grouped by method.

    A name shared by several methods (e.g. ``perturb``) gets one flag whose default is the method's own;
    its help lists each method's default. Returns ``{dest: field name}``.
    """
    from minority.methods.base import all_methods

    fields: dict[str, list] = {}
    for m in all_methods().values():
        for f in dataclasses.fields(m.config):
            fields.setdefault(f.name, []).append((m.name, f))
    dests = {}
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, owners in fields.items():
        mname, f = owners[0]
        group_name = " / ".join(sorted({o[0] for o in owners}))
        group = groups.setdefault(group_name, parser.add_argument_group(f"{group_name} options"))
        helptext = f.metadata.get("help", "")
        defaults = {o[0]: o[1].default for o in owners}
        if len({repr(v) for v in defaults.values()}) > 1:
            helptext += " (default: " + ", ".join(f"{k}: {v}" for k, v in defaults.items()) + ")"
            default_shown = argparse.SUPPRESS
        else:
            default_shown = f.default
        kw = {"dest": f"param_{name}", "default": None, "help": helptext.replace("%", "%%")}
        if f.type in (bool, "bool"):
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = _field_parser(f)
            if f.metadata.get("choices"):
                kw["choices"] = f.metadata["choices"]
            kw["metavar"] = name.upper()
        action = group.add_argument(_kebab(name), **kw)
        action.default = None
        if default_shown is not argparse.SUPPRESS:
            action.help = kw["help"] + f" (default: {default_shown})"
        dests[f"param_{name}"] = name
    return dests


def _field_parser(f):
    t = f.type if not isinstance(f.type, str) else {"int": int, "float": float, "str": str}.get(f.type.split(" ")[0])
    if t in (int, float, str):
        return t
    default = f.default
    if isinstance(default, bool):
        return None
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    return _number_or_string


def _number_or_string(v: str):
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return v


# --------------------------------------------------------------------------------------------------


def _add_generate(sub) -> None:
    from minority.methods.base import all_methods
    from minority.pipelines.components import FAMILY_DEFAULTS

    methods = all_methods()
    p = sub.add_parser(
        "generate", formatter_class=HelpFormatter, help="generate images with a minority or baseline sampler",
        description="Generate images for prompts × seeds into OUT/images/<prompt_index>_<seed>.png with manifest.jsonl "
        "and config.json.\n\nMethods:\n" + "\n".join(f"  {n:16s} {m.summary}" for n, m in sorted(methods.items())),
    )
    p.add_argument("prompts", nargs="*", help="prompts (each gets every seed)")
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
    p.add_argument("--model", default=None, help="embedded model name (`minority models`), diffusers folder or hub id "
                   "(default: fashion-sd, or the tiny random pipeline until it ships)")
    p.add_argument("--lightning-unet", default=None, help="SDXL-Lightning UNet .safetensors (path or repo_id/file) "
                   "loaded into an SDXL base --model")
    p.add_argument("--class-label", type=int, action="append", default=None, dest="class_labels",
                   help="pixel-space class-conditional models: class label (repeat for several; none = unconditional)")
    p.add_argument("--method", default="ddim", choices=sorted(methods),
                   help="sampling method (pixel-space models: ancestral, ddim, sgms)")
    p.add_argument("--seed", type=int, default=0, help="first seed; images use seeds SEED..SEED+N-1")
    p.add_argument("--seeds", default=None, help="explicit seeds, e.g. 0-7 or 0,3,5 (overrides --seed/--images-per-prompt)")
    p.add_argument("--images-per-prompt", type=int, default=1, help="images per prompt N")
    fam = ", ".join(f"{k}: {v['steps']}" for k, v in FAMILY_DEFAULTS.items() if k != "pixel")
    p.add_argument("--steps", type=int, default=None, help=f"sampling steps T (default per family: {fam})")
    p.add_argument("--guidance", type=float, default=None,
                   help="CFG scale w; 1 = no CFG (default: SD 7.5, SDXL 5, Lightning 1; cfgpp λ 0.6)")
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
    dests = add_method_arguments(p)
    p.set_defaults(func=_run_generate, param_dests=dests, generate_parser=p)


def _run_generate(args) -> int:
    import os
    import shlex

    from minority.methods.base import get_method
    from minority.runs.distributed import launched_distributed
    from minority.runs.generate import GenerateConfig, GenerationInterrupted, generate_to_folder, preflight
    from minority.runs.launch import argv_from_args, launch_processes
    from minority.runs.lock import lock_for_launch
    from minority.runs.prompts import config_fields, read_prompts_file
    from minority.runs.seeds import parse_seeds, seed_run

    parser = args.generate_parser
    if args.num_processes < 1:
        raise MinorityError(f"--num-processes must be >= 1 (got {args.num_processes}).")
    records = []
    if args.prompts_file:
        records = read_prompts_file(args.prompts_file, limit=args.limit, offset=args.offset, sample=args.sample,
                                    sample_seed=args.sample_seed, fmt=args.prompts_format)
    elif args.sample is not None or args.limit is not None or args.offset:
        raise MinorityError("--sample, --offset and --limit select prompts of a --prompts-file: pass one.")
    seeds = parse_seeds(args.seeds) if args.seeds else seed_run(args.seed, args.images_per_prompt)
    method = get_method(args.method)
    own = {f.name for f in dataclasses.fields(method.config)}
    params = {}
    for dest, name in args.param_dests.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if name not in own:
            raise MinorityError(f"--{name.replace('_', '-')} is not a parameter of method {args.method!r}.")
        params[name] = value
    source = {}
    if args.prompts_file:
        source = {"file": str(args.prompts_file), "format": args.prompts_format, "sample": args.sample,
                  "sample_seed": args.sample_seed, "offset": args.offset, "limit": args.limit, "count": len(records)}
    cfg = GenerateConfig(
        model=args.model, method=args.method, seeds=tuple(seeds), steps=args.steps,
        guidance=args.guidance, negative_prompt=args.negative_prompt, height=args.height, width=args.width,
        batch_size=args.batch_size, device=args.device, dtype=args.dtype, out=args.out,
        lightning_unet=args.lightning_unet, overwrite=args.overwrite, params=params, resume=args.resume,
        prompts_source=source, deterministic=args.deterministic,
        **config_fields(records, tuple(args.prompts), tuple(args.class_labels or ())),
    )
    if args.num_processes > 1 and not launched_distributed():
        preflight(cfg)  # bad input: one error line here, not one per process
        script = (["-v"] if getattr(args, "verbose", False) else []) + ["generate"]
        with lock_for_launch(cfg.out):  # held for the ranks (they get its token)
            return launch_processes(args.num_processes, script + argv_from_args(parser, args, drop=("num_processes",)),
                                    device=args.device)
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


def _add_models(sub) -> None:
    p = sub.add_parser("models", formatter_class=HelpFormatter, help="list the embedded models shipped with minority")
    p.set_defaults(func=_run_models)


def _run_models(args) -> int:
    try:
        from minority.embedded import embedded_models
    except ImportError:
        embedded_models = list
    rows = embedded_models()
    print(f"{'name':22s} {'kind':10s} {'size':>9s}  provenance")
    for m in rows:
        prov = m.provenance or {}
        desc = prov.get("summary") or prov.get("command") or ""
        size = getattr(m, "size", None) or getattr(m, "size_bytes", 0) or 0
        print(f"{m.name:22s} {m.kind:10s} {size / 2**20:8.1f}M  {desc}")
    print(f"{'tiny-random-sd':22s} {'sd':10s} {'':>9s}  randomly initialised SD-shaped pipeline (tests, smoke runs)")
    print(f"{'tiny-random-sdxl':22s} {'sdxl':10s} {'':>9s}  randomly initialised SDXL-shaped pipeline (tests, smoke runs)")
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", formatter_class=HelpFormatter,
                       help="the main job of `make run`: a comparison grid of methods on the default model")
    p.add_argument("--out", default="outputs/run", help="output folder")
    p.add_argument("--model", default=None, help="model (default: fashion-sd, or the tiny random pipeline until it ships)")
    p.add_argument("--seeds", default="0-3", help="seeds shared by every method")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: 25 on the embedded model)")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from minority.runs.demo import run_demo
    from minority.runs.seeds import parse_seeds

    run_demo(out=args.out, model=args.model, seeds=parse_seeds(args.seeds), steps=args.steps)
    return 0


def _add_score(sub) -> None:
    p = sub.add_parser("score", formatter_class=HelpFormatter,
                       help="rank real images by minority score (reconstruction loss, Um & Ye 2023)")
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    p.add_argument("--model", required=True, help="pixel-space or text-to-image model (name, folder or hub id)")
    p.add_argument("--out", default="minority_scores.csv", help="CSV to write (file, score, rank)")
    p.add_argument("--perturb", type=float, default=0.8, help="p: re-noise to timestep p·T_train")
    p.add_argument("--distance", default=None, choices=["enet-lpips", "lpips", "l2", "l1"],
                   help="d (default: pixel models enet-lpips, latent models l2)")
    p.add_argument("--mc-samples", type=int, default=4, help="Monte-Carlo draws per image")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch")
    p.add_argument("--seed", type=int, default=0, help="image k uses seed SEED+k for its draws")
    p.add_argument("--class-label", type=int, default=None, help="class for class-conditional pixel models (default: null class)")
    p.add_argument("--prompt", default="", help="text-to-image models: conditioning prompt")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable and non-square images (with a warning that counts them) instead of stopping")
    p.set_defaults(func=_run_score)


def _run_score(args) -> int:
    from minority.runs.score import score_images

    out = score_images(args.images, args.model, args.out, perturb=args.perturb, distance=args.distance,
                       mc_samples=args.mc_samples, batch_size=args.batch_size, seed=args.seed,
                       class_label=args.class_label, prompt=args.prompt, device=args.device, skip_bad=args.skip_bad)
    print(f"Wrote {out}")
    return 0


def _add_optional(sub, module: str, name: str, helptext: str, add: str, run: str) -> None:
    """Sub-commands whose implementation lives in an optional module (evaluation suite, training, ...)."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("minority"):
            return
        raise
    p = sub.add_parser(name, formatter_class=HelpFormatter, help=helptext)
    getattr(mod, add)(p)
    p.set_defaults(func=getattr(mod, run))


def _quiet_libraries() -> None:
    """No weight-loading progress bars or info chatter from transformers/diffusers in the CLI."""
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
        dlog.disable_progress_bar()
        dlog.set_verbosity_error()
    except ImportError:
        pass


def build_parser() -> argparse.ArgumentParser:
    from minority import __version__

    parser = Parser(prog="minority", formatter_class=HelpFormatter,
                                     description="Minority-focused sampling for diffusion models (MinorityPrompt, SGMS).")
    parser.add_argument("--version", action="version", version=f"minority {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    _add_generate(sub)
    _add_models(sub)
    _add_demo(sub)
    _add_score(sub)
    _add_optional(sub, "minority.metrics.cli", "evaluate", "compute the papers' metrics on generated images",
                  "add_evaluate_arguments", "run_evaluate")
    _add_optional(sub, "minority.training.cli", "train", "train an embedded model from scratch",
                  "add_train_arguments", "run_train")
    _add_optional(sub, "minority.training.quality", "quality", "measure an embedded model against its quality bars",
                  "add_quality_arguments", "run_quality_command")
    _add_optional(sub, "minority.benchmark.cli", "benchmark", "re-run the papers' tables and performance protocols",
                  "add_benchmark_arguments", "run_benchmark")
    _add_optional(sub, "minority.benchmark.report", "report", "one self-contained HTML page from benchmark/generate outputs",
                  "add_report_arguments", "run_report")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("diffusers", "transformers", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    try:
        return int(args.func(args) or 0)
    except MinorityError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
