"""``minority`` command line: generate, models, demo (``make run``), score, evaluate, train, quality, benchmark,
report.

Every command maps to one frozen dataclass written as ``config.json`` beside its outputs; every flag shows its
default in ``--help``. Bad input ends with one ``error: ...`` line and exit status 2.

Only the chosen sub-command's module is imported (``minority --help`` must not load torch): the imports in
:data:`COMMANDS`' loaders are deliberately inside functions.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

from minority import __version__
from minority.cli.formatting import HelpFormatter, Parser
from minority.errors import MinorityError

log = logging.getLogger("minority")


def _generate(p: argparse.ArgumentParser, argv: list[str]) -> None:
    from minority.cli.generate import add_generate_arguments  # lazy: loads torch, only for `generate`
    from minority.cli.method_flags import chosen_method  # lazy: as above

    add_generate_arguments(p, chosen_method(argv))


def _module(module: str, add: str, run: str | None = None) -> Callable[[argparse.ArgumentParser, list[str]], None]:
    """A loader that imports ``module`` and lets its ``add`` fill the parser (``run`` becomes the action)."""

    def load(p: argparse.ArgumentParser, argv: list[str]) -> None:
        mod = importlib.import_module(module)
        getattr(mod, add)(p)
        if run is not None:
            p.set_defaults(func=getattr(mod, run))

    return load


# name -> (help, loader)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser, list[str]], None]]] = {
    "generate": ("generate images with a minority or baseline sampler", _generate),
    "models": ("list the embedded models shipped with minority", _module("minority.cli.commands", "add_models_arguments")),
    "demo": ("the main job of `make run`: a comparison grid of methods on the default model",
             _module("minority.cli.commands", "add_demo_arguments")),
    "score": ("rank real images by minority score (reconstruction loss, Um & Ye 2023)",
              _module("minority.cli.commands", "add_score_arguments")),
    "convert": ("convert a guided-diffusion (ADM) checkpoint into a diffusers pixel-model folder",
                _module("minority.cli.convert", "add_convert_arguments")),
    "upsample": ("run a super-resolution model (the 64->256 ImageNet upsampler) over low-resolution images",
                 _module("minority.cli.commands", "add_upsample_arguments")),
    "evaluate": ("compute the papers' metrics on generated images",
                 _module("minority.cli.evaluate", "add_evaluate_arguments", "run_evaluate")),
    "train": ("train an embedded model from scratch", _module("minority.training.cli", "add_train_arguments", "run_train")),
    "quality": ("measure an embedded model against its quality bars",
                _module("minority.training.quality", "add_quality_arguments", "run_quality_command")),
    "benchmark": ("re-run the papers' tables and performance protocols",
                  _module("minority.benchmark.cli", "add_benchmark_arguments", "run_benchmark")),
    "sweep": ("choose a model's per-method defaults by a sweep on held-out prompts and seeds",
              _module("minority.benchmark.sweep", "add_sweep_arguments")),
    "report": ("one self-contained HTML page from benchmark/generate outputs",
               _module("minority.benchmark.report", "add_report_arguments", "run_report")),
}


def _command_of(argv: list[str]) -> str | None:
    for tok in argv:
        if tok == "--" or not tok.startswith("-"):
            return tok if tok in COMMANDS else None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: every sub-command listed, only the chosen one's options built (with
    ``argv=None``: all of them, ``generate`` with the default method's options)."""
    chosen = _command_of(argv) if argv is not None else None
    parser = Parser(prog="minority", formatter_class=HelpFormatter,
                    description="Minority-focused sampling for diffusion models (MinorityPrompt, SGMS).")
    parser.add_argument("--version", action="version", version=f"minority {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name, (helptext, load) in COMMANDS.items():
        p = sub.add_parser(name, formatter_class=HelpFormatter, help=helptext, description=helptext)
        if argv is None or name == chosen:
            load(p, argv or [])
    return parser


def _quiet_libraries() -> None:
    """No weight-loading progress bars or info chatter from transformers/diffusers in the CLI (called once a
    command runs: importing them here would slow down ``--help``)."""
    for noisy in ("diffusers", "transformers", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog
    except ImportError:
        return
    else:
        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
        dlog.disable_progress_bar()
        dlog.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        parser = build_parser(argv)
        args, extras = parser.parse_known_args(argv)
        if args.verbose:
            logging.getLogger().setLevel(logging.DEBUG)
        _quiet_libraries()
        if extras:
            if args.command != "generate":
                parser.error(f"unrecognized arguments: {' '.join(extras)}")
            from minority.cli.method_flags import refuse_foreign_flags  # lazy: `generate` only

            refuse_foreign_flags(extras, args.method)
        return int(args.func(args) or 0)
    except MinorityError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
