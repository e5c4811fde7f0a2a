"""SGMS cost vs its base sampler on a pixel model: UNet forward calls, backward passes and the wall-time
ratio sgms / ancestral for guide_every 1, 2, 5 (issue 4). Prints, asserts nothing.

    python benchmarks/perf_sgms.py --model PIXEL_MODEL_FOLDER --steps 50 --batch 4
    python benchmarks/perf_sgms.py            # builds a tiny random 32×32 UNet2DModel in a temp folder
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from minority import PixelPipeline


def tiny_pixel_model(folder: Path) -> Path:
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=1, out_channels=2, layers_per_block=1, block_out_channels=(32, 64, 64),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=32)
    DDPMPipeline(unet, DDPMScheduler(variance_type="learned_range")).save_pretrained(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__)
    ap.add_argument("--model", default=None, help="pixel model (default: a tiny random 32×32 UNet2DModel)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--distance", default="l2")
    ap.add_argument("--mc-samples", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = a.model or str(tiny_pixel_model(Path(tempfile.mkdtemp()) / "tiny-pixel"))
    pipe = PixelPipeline.from_pretrained(model)
    labels = [0] * a.batch if pipe.num_classes else None
    kw = dict(class_labels=labels, num_images=a.batch, seeds=range(a.batch), num_inference_steps=a.steps,
              output_type="latent")

    def run(**extra):
        pipe(**kw, **extra)  # warm-up
        t0 = time.perf_counter()
        out = pipe(**kw, **extra)
        return time.perf_counter() - t0, out

    t_base, base = run(method="ancestral")
    print(f"model={model} steps={a.steps} batch={a.batch} distance={a.distance} mc_samples={a.mc_samples}")
    print(f"ancestral: {t_base:.2f} s, {base.settings['unet_calls']} UNet calls")
    for every in (1, 2, 5):
        t, out = run(method="sgms", guide_every=every, distance=a.distance, mc_samples=a.mc_samples)
        guided = len(out.trajectories[0].get("step", []))
        floor = a.steps + guided * a.mc_samples
        print(f"sgms guide_every={every}: {t:.2f} s, ratio {t / t_base:.2f}; UNet calls {out.settings['unet_calls']} "
              f"(floor {floor} = {a.steps} steps, {guided} of them reusing the gradient forward, + {guided}×{a.mc_samples} "
              f"reconstructions); backward passes {guided}")


if __name__ == "__main__":
    main()
