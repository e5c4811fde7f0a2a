"""``minority upsample``: the second stage of the SGMS paper's ImageNet-256 samples — a converted guided-diffusion
64→256 upsampler (``minority convert adm ... --preset imagenet64-256-upsampler``) run with ancestral sampling
over a folder of 64-px images.

As guided-diffusion's ``super_res_sample.py``: each low-resolution image y (in [−1, 1]) is bilinearly upsampled
to 256×256 and concatenated to z_t at every step (``Conditioning.concat``), and the class label of the image
(the ``class_label`` of the first stage's ``manifest.jsonl``, or ``--class-label``) conditions the model.

    minority generate --model imagenet64 --method sgms --class-label 7 --seeds 0-99 --out runs/in64
    minority upsample --images runs/in64 --model upsampler256 --out runs/in256

Writes ``OUT/images/<name>.png`` (the first stage's file names), ``OUT/manifest.jsonl`` (file, source,
class_label, seed, method, steps, model, seconds) and ``OUT/config.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from minority.errors import MinorityError
from minority.pipelines.pixel import PixelPipeline, load_pipeline
from minority.runs.io import (
    append_jsonl,
    atomic_write_json,
    ensure_writable_dir,
    read_jsonl,
    save_image_atomic,
)
from minority.runs.score import list_images


@dataclass(frozen=True)
class UpsampleConfig:
    """One ``minority upsample`` run (written as ``config.json``)."""

    images: str
    model: str
    out: str = "outputs/upsample"
    steps: int | None = None
    seed: int | None = None
    class_label: int | None = None
    batch_size: int = 4
    device: str = "cpu"
    overwrite: bool = False
    spacing: str = "scheduler"


@dataclass(frozen=True)
class LowRes:
    """One input: the image file, its class label (None: unconditional / not given) and its seed."""

    path: Path
    class_label: int | None
    seed: int


def find_inputs(folder: str | Path, seed: int | None = None, class_label: int | None = None) -> list[LowRes]:
    """The inputs of ``folder``: a ``minority generate`` run (``manifest.jsonl`` rows: file, class_label, seed)
    or a plain folder of images (seeds ``seed + k``, default 0). ``class_label`` overrides every label."""
    folder = Path(folder)
    rows = read_jsonl(folder / "manifest.jsonl") if (folder / "manifest.jsonl").is_file() else []
    rows = [r for r in rows if isinstance(r.get("file"), str)]
    if rows:
        out = []
        for k, r in enumerate(rows):
            lab = class_label if class_label is not None else r.get("class_label")
            s = (seed + k) if seed is not None else int(r.get("seed", k))
            out.append(LowRes(folder / r["file"], None if lab is None else int(lab), s))
        return out
    return [LowRes(p, class_label, (seed or 0) + k) for k, p in enumerate(list_images(folder))]


def read_low_res(path: Path, size: int) -> torch.Tensor:
    """An RGB image ``(3, size, size)`` in [−1, 1] (as guided-diffusion: x/127.5 − 1); other sizes refused."""
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    except OSError as err:
        raise MinorityError(f"Cannot read image {path} ({err}).") from err
    if arr.shape[:2] != (size, size):
        raise MinorityError(f"Image {path} is {arr.shape[1]}x{arr.shape[0]}: this upsampler takes {size}x{size} images.")
    return torch.from_numpy(arr / 127.5 - 1.0).permute(2, 0, 1)


def _pipeline(cfg: UpsampleConfig) -> PixelPipeline:
    pipe = load_pipeline(cfg.model, device=cfg.device)
    if not isinstance(pipe, PixelPipeline) or pipe.components.low_res_conditioning is None:
        raise MinorityError(f"{cfg.model} is not a super-resolution model: convert guided-diffusion's upsampler with "
                            "`minority convert adm 64_256_upsampler.pt --preset imagenet64-256-upsampler --out DIR`.")
    return pipe


def upsample_folder(cfg: UpsampleConfig, pipe: PixelPipeline | None = None) -> Path:
    """Upsample every image of ``cfg.images`` with ancestral sampling (one CPU generator per image, SPEC §3.4);
    returns the output folder."""
    if cfg.batch_size < 1:
        raise MinorityError("--batch-size must be at least 1.")
    inputs = find_inputs(cfg.images, cfg.seed, cfg.class_label)
    stems = [b.path.stem for b in inputs]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise MinorityError(f"Two input images are named {dup!r}: give a folder whose image names are unique.")
    out = Path(cfg.out)
    if (out / "manifest.jsonl").exists() and not cfg.overwrite:
        raise MinorityError(f"{out} already holds results: choose another --out or pass --overwrite.")
    pipe = pipe or _pipeline(cfg)
    size = int(pipe.components.low_res_conditioning.get("size") or 64)
    ensure_writable_dir(out / "images")
    (out / "manifest.jsonl").unlink(missing_ok=True)
    atomic_write_json(out / "config.json", {"command": "upsample", **asdict(cfg)})
    for start in range(0, len(inputs), cfg.batch_size):
        batch = inputs[start:start + cfg.batch_size]
        labels = [b.class_label for b in batch]
        plan = pipe.plan(labels, "ancestral", {}, steps=cfg.steps, output_type="pil", spacing=cfg.spacing)
        low = torch.stack([read_low_res(b.path, size) for b in batch])
        t0 = time.perf_counter()
        res = pipe.run_batch(plan, labels, seeds=[b.seed for b in batch], low_res=low)
        sec = (time.perf_counter() - t0) / len(batch)
        for b, img in zip(batch, res.images):
            rel = f"images/{b.path.stem}.png"
            meta = {"file": rel, "source": str(b.path), "class_label": b.class_label, "seed": b.seed,
                    "method": "ancestral", "steps": plan.steps, "spacing": cfg.spacing, "model": cfg.model, "seconds": round(sec, 3)}
            save_image_atomic(img, out / rel, text=json.dumps(meta))
            append_jsonl(out / "manifest.jsonl", meta)
    return out
