"""``minority convert adm CKPT.pt --out FOLDER (--preset NAME | --flags "...")``: a guided-diffusion (ADM)
checkpoint as a diffusers pixel-model folder that ``--model FOLDER`` loads (SPEC §3.7)."""

from __future__ import annotations

import argparse

from minority.pipelines.adm.convert import DTYPES, convert_adm
from minority.pipelines.adm.flags import PRESET_CHECKPOINTS, PRESETS, parse_preset_or_flags


def add_convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("format", choices=["adm"], help="checkpoint format: adm = openai/guided-diffusion UNetModel / SuperResModel")
    p.add_argument("checkpoint", help="the .pt state dict (read with torch.load(weights_only=True) only)")
    p.add_argument("--out", required=True, help="diffusers folder to write (model_index.json, unet/, scheduler/)")
    presets = "; ".join(f"{k}: {v}" for k, v in PRESET_CHECKPOINTS.items())
    p.add_argument("--preset", default=None, choices=list(PRESETS), help=f"the SGMS paper's checkpoints ({presets})")
    p.add_argument("--flags", default=None,
                   help="guided-diffusion MODEL_FLAGS and DIFFUSION_FLAGS, exactly as for its scripts, e.g. "
                        "\"--image_size 64 --num_channels 192 --learn_sigma True ...\"")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES), help="precision of the written weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=run_convert)


def run_convert(args) -> int:
    flags = parse_preset_or_flags(args.preset, args.flags)
    out = convert_adm(args.checkpoint, args.out, flags, dtype=args.dtype, overwrite=args.overwrite)
    print(f"Wrote {out} (load it with --model {out})")
    return 0
