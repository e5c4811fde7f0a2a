"""The small commands: ``models`` (what ships), ``demo`` (the main job of ``make run``), ``score`` (rank real
images by minority score), ``upsample`` (a super-resolution model over a folder of low-resolution images)."""

from __future__ import annotations

import argparse

from minority.embedded import embedded_models
from minority.pipelines.families import FAMILY_DEFAULTS
from minority.runs.demo import run_demo as demo
from minority.runs.score import score_images
from minority.runs.seeds import parse_seeds
from minority.runs.upsample import UpsampleConfig, upsample_folder


def add_models_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(func=run_models)


def run_models(args) -> int:
    rows = embedded_models()
    print(f"{'name':22s} {'kind':10s} {'size':>9s}  provenance")
    for m in rows:
        prov = m.provenance or {}
        desc = prov.get("summary") or prov.get("command") or ""
        size = getattr(m, "size", None) or getattr(m, "size_bytes", 0) or 0
        print(f"{m.name:22s} {m.kind:10s} {size / 2**20:8.1f}M  {desc}")
    print(f"{'tiny-random-sd':22s} {'sd':10s} {'':>9s}  randomly initialised SD-shaped pipeline (tests, smoke runs)")
    print(f"{'tiny-random-sdxl':22s} {'sdxl':10s} {'':>9s}  randomly initialised SDXL-shaped pipeline (tests, smoke runs)")
    for name, fam, what in (("tiny-random-sd3", "sd3", "SD3"), ("tiny-random-flux-dev", "flux-dev", "FLUX.1-dev"),
                            ("tiny-random-flux-schnell", "flux-schnell", "FLUX.1-schnell")):
        d = FAMILY_DEFAULTS[fam]
        print(f"{name:22s} {fam:10s} {'':>9s}  randomly initialised {what}-shaped flow pipeline "
              f"(defaults: {d['steps']} steps, guidance {d['guidance']:g})")
    return 0


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="outputs/run", help="output folder")
    p.add_argument("--model", default=None, help="model (default: fashion-sd, or the tiny random pipeline until it ships)")
    p.add_argument("--seeds", default="0-3", help="seeds shared by every method")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: 25 on the embedded model)")
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    demo(out=args.out, model=args.model, seeds=parse_seeds(args.seeds), steps=args.steps)
    return 0


def add_score_arguments(p: argparse.ArgumentParser) -> None:
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
    p.set_defaults(func=run_score)


def run_score(args) -> int:
    out = score_images(args.images, args.model, args.out, perturb=args.perturb, distance=args.distance,
                       mc_samples=args.mc_samples, batch_size=args.batch_size, seed=args.seed,
                       class_label=args.class_label, prompt=args.prompt, device=args.device,
                       skip_bad=args.skip_bad)
    print(f"Wrote {out}")
    return 0


def add_upsample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", required=True,
                   help="low-resolution images: a `minority generate` run folder (class labels and seeds from its "
                        "manifest.jsonl) or a folder of images")
    p.add_argument("--model", required=True, help="super-resolution model folder (minority convert adm ... "
                                                  "--preset imagenet64-256-upsampler)")
    p.add_argument("--out", default="outputs/upsample", help="output folder")
    p.add_argument("--steps", type=int, default=None, help="ancestral sampling steps (default: the model's, 250)")
    p.add_argument("--spacing", default="scheduler", choices=["scheduler", "adm"],
                   help="timestep grid: the scheduler's, or adm = guided-diffusion's timestep_respacing (the SGMS "
                        "paper's 250-step runs) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="image k uses seed SEED+k (default: its manifest seed)")
    p.add_argument("--class-label", type=int, default=None, help="class of every image (default: from the manifest)")
    p.add_argument("--batch-size", type=int, default=4, help="images per batch")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    p.set_defaults(func=run_upsample)


def run_upsample(args) -> int:
    cfg = UpsampleConfig(images=args.images, model=args.model, out=args.out, steps=args.steps, seed=args.seed,
                         class_label=args.class_label, batch_size=args.batch_size, device=args.device,
                         overwrite=args.overwrite, spacing=args.spacing)
    print(f"Wrote {upsample_folder(cfg)}")
    return 0
