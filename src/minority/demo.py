"""The main job of ``make run``: the same prompts × seeds with each method on the default model,
written as the usual generation folders plus one labelled comparison grid (``grid.png``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PIL import Image

from .generate import GenerateConfig, run_generate
from .grid import labelled_grid
from .io import read_jsonl
from .methods import all_methods
from .models import default_model

log = logging.getLogger("minority")

DEMO_PROMPTS = ("a photo of a sneaker", "a photo of a dress", "a bag on a dark background")
DEMO_METHODS = ("ddim", "null-prompt", "cads", "cfgpp", "minority-prompt")


def run_demo(out: str = "outputs/run", model: str | None = None, seeds=(0, 1, 2, 3), steps: int | None = None) -> Path:
    """Generate ``DEMO_PROMPTS`` × ``seeds`` with every available demo method and write ``grid.png``."""
    model = model or default_model()
    out = Path(out)
    if model.startswith("tiny-random"):
        print(f"NOTE: the embedded trained model is not available yet; running on {model!r}, a tiny RANDOMLY "
              "INITIALISED pipeline: the images are noise-like and only show that the pipeline runs end to end.")
    methods = [m for m in DEMO_METHODS if m in all_methods()]
    if steps is None:
        steps = 10 if model.startswith("tiny-random") else 25
    from .pipeline import MinorityPipeline

    pipe = MinorityPipeline.from_pretrained(model)
    t0 = time.perf_counter()
    for m in methods:
        cfg = GenerateConfig(prompts=DEMO_PROMPTS, model=model, method=m, seeds=tuple(seeds), steps=steps,
                             out=str(out / m), overwrite=True, device="cpu")
        run_generate(cfg, pipe=pipe)
    rows, labels = [], []
    manifests = {m: {(e["prompt_index"], e["seed"]): e["file"] for e in read_jsonl(out / m / "manifest.jsonl")} for m in methods}
    for pi, prompt in enumerate(DEMO_PROMPTS):
        for s in seeds:
            rows.append([Image.open(out / m / manifests[m][(pi, s)]) for m in methods])
            labels.append(f"{prompt} (seed {s})")
    grid = labelled_grid(rows, methods, labels, title=f"{model}: same prompt and seed in each row ({steps} steps)")
    grid.save(out / "grid.png")
    print(f"Done in {time.perf_counter() - t0:.0f} s. Comparison grid: {out / 'grid.png'}; "
          f"per-method images and manifests: {out}/<method>/")
    return out
