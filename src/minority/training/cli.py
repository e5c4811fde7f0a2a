"""CLI glue of ``minority train fashion-sd|fashion-ddpm|fashion-classifier``.

The main CLI owner wires it as::
    sub = subparsers.add_parser("train", help=...)
    add_train_arguments(sub)
    ... return run_train(args)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

from minority.embedded import ASSETS_DIR, MODEL_NAMES
from minority.errors import MinorityError
from minority.training import train_classifier, train_ddpm, train_flow, train_sd
from minority.training.common import config_from_dict

DEFAULT_RUNS_DIR = Path("runs")
# flags that may override a saved config when resuming (argparse default None = not given)
_OVERRIDES = {"steps": "steps", "vae_steps": "vae_steps", "batch_size": "batch_size", "lr": "lr"}


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``minority train`` arguments to ``parser`` (defaults shown in ``--help``)."""
    recipes = {name: _recipe(name)[1] for name in MODEL_NAMES}

    def per_model(field: str) -> str:
        vals = [f"{n} {getattr(c, field)}" for n, c in recipes.items() if hasattr(c, field)]
        return "default: " + ", ".join(vals)

    parser.add_argument("model", choices=MODEL_NAMES, help="which embedded model to train")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder (config.json, train.log, loss.png, checkpoint/); default runs/MODEL")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and noise (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with the 4 Fashion-MNIST idx files (default: Debian dataset-fashion-mnist)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the checkpoint in --out (its config.json wins, except for the flags below)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"main-phase training steps, may be raised on --resume ({per_model('steps')})")
    parser.add_argument("--vae-steps", type=int, default=None, help=f"fashion-sd: VAE phase steps ({per_model('vae_steps')})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"batch size ({per_model('batch_size')})")
    parser.add_argument("--lr", type=float, default=None, help=f"peak learning rate ({per_model('lr')})")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; use 1 on shared machines)")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0, help="checkpoint interval (default: %(default)s)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop after this many minutes of this session (checkpointed; continue with --resume)")
    parser.add_argument("--export-dir", type=Path, default=None,
                        help="where the finished model folder goes (default OUT/MODEL)")
    parser.add_argument("--install", action="store_true",
                        help="export into the package (src/minority/assets/models/MODEL) instead")
    parser.add_argument("--export-only", action="store_true",
                        help="with --resume: export the checkpoint as it is (EMA weights), without training further")
    parser.add_argument("--init-from", type=Path, default=None, metavar="FOLDER",
                        help="fashion-ddpm: start a new run from this model folder's UNet (e.g. the shipped model, to "
                             "train it further when its checkpoint is gone); the recipe's architecture must match")
    parser.add_argument("--tiny", action="store_true", help="tiny architecture and few steps (smoke tests)")
    return parser


def _recipe(name: str):
    """(config class, default config, tiny config, train function) of model ``name``."""
    if name == "fashion-classifier":
        m = train_classifier
        return m.ClassifierTrainConfig, m.ClassifierTrainConfig(), m.tiny_config(), m.train_classifier
    if name == "fashion-ddpm":
        m = train_ddpm
        return m.DDPMTrainConfig, m.DDPMTrainConfig(), m.tiny_config(), m.train_ddpm
    if name == "fashion-sd":
        m = train_sd
        return m.SDTrainConfig, m.SDTrainConfig(), m.tiny_config(), m.train_sd
    if name == "fashion-flow":
        m = train_flow
        return m.FlowTrainConfig, m.FlowTrainConfig(), m.tiny_config(), m.train_flow
    raise MinorityError(f"unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)}")


def run_train(args: argparse.Namespace) -> int:
    """Run ``minority train`` from parsed ``args``; returns the process exit status (0 ok, 3 stopped early)."""
    if args.threads is not None:
        if args.threads < 1:
            raise MinorityError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.export_only and not args.resume:
        raise MinorityError("--export-only exports an existing checkpoint: add --resume (and --out of that run)")
    cls, default, tiny, train = _recipe(args.model)
    out = args.out if args.out is not None else DEFAULT_RUNS_DIR / args.model
    if args.resume:
        cfg_path = out / "config.json"
        if not cfg_path.is_file():
            raise MinorityError(f"--resume given but {cfg_path} does not exist: start without --resume")

        config = config_from_dict(cls, json.loads(cfg_path.read_text()))
    else:
        config = dataclasses.replace(tiny if args.tiny else default, seed=args.seed)
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = {field: getattr(args, flag) for flag, field in _OVERRIDES.items()
                 if getattr(args, flag, None) is not None}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise MinorityError(f"--{unknown[0].replace('_', '-')} does not apply to {args.model}")
    for key, val in overrides.items():
        if val <= 0:
            raise MinorityError(f"--{key.replace('_', '-')} must be positive, got {val}")
    if args.resume and "lr" in overrides and overrides["lr"] != getattr(config, "lr", None):
        raise MinorityError("--lr cannot change on --resume (the optimiser state keeps the saved rate): drop --lr")
    config = dataclasses.replace(config, **overrides)
    if args.init_from is not None:
        if "init_from" not in names:
            raise MinorityError(f"--init-from does not apply to {args.model}")
        if args.resume:
            raise MinorityError("--init-from starts a new run from a model folder; --resume continues a checkpoint: "
                                "pass only one.")
        config = dataclasses.replace(config, init_from=str(ASSETS_DIR / args.model if str(args.init_from) == args.model
                                                           else args.init_from))
    export = ASSETS_DIR / args.model if args.install else args.export_dir
    result = train(config, out, data_dir=args.data_dir, resume=args.resume, device=args.device,
                   checkpoint_minutes=args.checkpoint_minutes, max_minutes=args.max_minutes, export_dir=export,
                   export_only=args.export_only)
    if result is None:
        print(f"stopped early; continue with: minority train {args.model} --out {out} --resume")
        return 3
    print(f"{args.model}: model written to {result}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m minority.training.cli MODEL ...``)."""
    parser = add_train_arguments(argparse.ArgumentParser(prog="minority train"))
    args = parser.parse_args(argv)
    try:
        return run_train(args)
    except MinorityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
