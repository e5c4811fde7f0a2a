"""``minority score``: rank real images by their minority score (Um & Ye 2023) under a diffusion model.

Each image x0 (pixel models: resized to the model's size, in [−1, 1]; latent models: encoded by the VAE)
gets E_ε d(x0, x̂0(√ᾱ_p x0 + √(1−ᾱ_p) ε)) with p = perturb·T — the reconstruction loss that SGMS guides
with (:func:`minority.methods.sgms.reconstruction_loss`). High scores mark unique, low-density samples.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from minority.core.conditioning import Conditioning
from minority.core.rng import make_generators
from minority.errors import MinorityError
from minority.methods.sgms import get_distance, minority_score
from minority.pipelines.pixel import PixelPipeline, load_pipeline
from minority.runs.io import atomic_write_bytes

log = logging.getLogger("minority")

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise MinorityError(f"Image folder {folder} does not exist.")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXT)
    if not files:
        raise MinorityError(f"No images (png/jpg/...) in {folder}.")
    return files


def _image_problem(path: Path) -> str | None:
    """Why ``path`` cannot be scored (unreadable, not square), or None."""
    try:
        with Image.open(path) as img:
            img.load()
            w, h = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"cannot read image {path} ({err})"
    if w != h:
        return f"image {path} is {w}x{h}, not square (it would be squashed to the model's square size)"
    return None


def usable_images(files: list[Path], skip_bad: bool = False) -> list[Path]:
    """``files`` that read and are square; the first other one raises :class:`MinorityError` naming it, unless
    ``skip_bad`` (then they are left out with one warning that counts them)."""
    keep, bad = [], []
    for f in files:
        problem = _image_problem(f)
        if problem is None:
            keep.append(f)
        elif not skip_bad:
            raise MinorityError(f"{problem}: crop it to a square, or pass --skip-bad to leave such images out.")
        else:
            bad.append(problem)
    if bad:
        log.warning("Skipped %d unreadable or non-square image%s (first: %s).", len(bad), "s" if len(bad) > 1 else "",
                    bad[0])
    if not keep:
        raise MinorityError(f"No usable images left after skipping {len(bad)} bad ones: check the folder.")
    return keep


def load_image(path: Path, size: int, channels: int) -> torch.Tensor:
    """Image -> ``(channels, size, size)`` in [−1, 1] (bicubic resize)."""
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as err:
        raise MinorityError(f"Cannot read image {path}: {err}.") from err
    img = img.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    t = torch.from_numpy(arr)
    return t[None] if channels == 1 else t.permute(2, 0, 1)


def score_images(images: str | Path, model: str, out: str | Path, perturb: float = 0.8, distance: str | None = None,
                 mc_samples: int = 4, batch_size: int = 16, seed: int = 0, class_label: int | None = None,
                 prompt: str = "", device: str = "cpu", skip_bad: bool = False) -> Path:
    """Write ``out`` (CSV: file, score, rank) for every image under ``images``; returns the CSV path.

    Images must be square (they are resized to the model's square size); an unreadable or non-square image
    stops the run before the model loads, or with ``skip_bad`` is left out (one warning counts them)."""
    if not 0 < perturb < 1:
        raise MinorityError(f"perturb must be in (0, 1) (got {perturb}).")
    if mc_samples < 1:
        raise MinorityError(f"mc_samples must be >= 1 (got {mc_samples}).")
    files = usable_images(list_images(images), skip_bad)
    pipe = load_pipeline(model, device=device)
    c = pipe.components
    pixel = isinstance(pipe, PixelPipeline)
    if c.low_res_conditioning is not None:
        raise MinorityError(f"{model} is a super-resolution model (it needs low-resolution inputs): score with the "
                            "base model instead.")
    dist = get_distance(distance or ("enet-lpips" if pixel else "l2"), latent=not pixel)
    scores: list[float] = []
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(files), batch_size), desc="minority score", unit="batch"):
        chunk = files[start : start + batch_size]
        if pixel:
            size, ch = int(c.unet.config.sample_size), int(c.unet.config.in_channels)
            x = torch.stack([load_image(f, size, ch) for f in chunk]).to(c.device)
            labels = pipe.labels_tensor([class_label] * len(chunk)) if pipe.num_classes else None
            cond = Conditioning(class_labels=labels)
        else:
            x = torch.stack([load_image(f, c.default_size, 3) for f in chunk]).to(c.device)
            with torch.no_grad():
                x = c.encode_images((x + 1) / 2)
            cond, _ = pipe.prepare([prompt] * len(chunk), None, 1.0, "ddim", c.default_size, c.default_size)
        gens = make_generators([seed + start + k for k in range(len(chunk))])
        s = minority_score(pipe.denoiser, x, cond, gens, perturb=perturb, distance=dist, mc_samples=mc_samples)
        scores.extend(float(v) for v in s)
    order = np.argsort(-np.asarray(scores))
    rank = np.empty(len(scores), dtype=int)
    rank[order] = np.arange(1, len(scores) + 1)
    rows = ["file,score,rank"] + [f"{f},{v:.6g},{r}" for f, v, r in zip(files, scores, rank)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, ("\n".join(rows) + "\n").encode())
    return out
