"""Corner-dot investigation on fashion-ddpm DDIM (250 steps; issue 18): diffusers-style DDIM (clipped x̂0, the
model's ε̂ in the direction term) vs guided-diffusion-style DDIM (ε re-derived from the clipped x̂0), and ancestral.

Usage: python benchmarks/ddim_corner_dot.py SUMMARY.json GRID.png  (30 images per sampler, ~5 min on 2 CPU cores).
Results: docs/results/investigations/ddim-corner-dot/.
"""
import json
import sys

import numpy as np
import torch
from PIL import Image

import minority.core.sampling as S
from minority import PixelPipeline
from minority.data.fashion_mnist import load_fashion_mnist, to_model_input

torch.set_num_threads(1)
pipe = PixelPipeline.from_pretrained("fashion-ddpm")
labels = [c for c in range(10) for _ in range(3)]
seeds = list(range(len(labels)))
def run(method):
    out = pipe(class_labels=labels, seeds=seeds, method=method, num_inference_steps=250, output_type="np")
    return np.asarray(out.images)[..., 0]  # (B, 32, 32) in [0, 1]
res = {}
res["ancestral"] = run("ancestral")
res["ddim_diffusers"] = run("ddim")
def ddim_gd(ctx, pc, pu):
    eps = S.cfg_eps(pc, pu, ctx.guidance)
    x0 = S._clip(ctx.denoiser.guided_x0(ctx.z, ctx.t, eps, pc, pu, ctx.guidance), ctx)
    eps = (ctx.z - ctx.alpha ** 0.5 * x0) / (1.0 - ctx.alpha) ** 0.5  # guided-diffusion: ε from the clipped x̂0
    return ctx.alpha_next ** 0.5 * x0 + (1.0 - ctx.alpha_next) ** 0.5 * eps
S.SOLVERS["ddim"] = ddim_gd  # this process only
res["ddim_eps_from_clipped_x0"] = run("ddim")
real = to_model_input(load_fashion_mnist().split("test")[0][:3000]).numpy()[:, 0] * 0.5 + 0.5
res["real_test"] = real
summary = {}
for k, x in res.items():
    border = np.concatenate([x[:, :2, :].reshape(len(x), -1), x[:, -2:, :].reshape(len(x), -1),
                             x[:, :, :2].reshape(len(x), -1), x[:, :, -2:].reshape(len(x), -1)], 1)
    tr = x[:, :3, -3:].reshape(len(x), -1)
    hf = np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean()
    summary[k] = {"top_right_3x3_max_mean": float(tr.max(1).mean()), "images_with_bright_top_right(>0.3)": float((tr.max(1) > 0.3).mean()),
                  "border_mean": float(border.mean()), "mean_abs_neighbour_diff": float(hf), "n": len(x)}
    print(k, json.dumps(summary[k]), flush=True)
with open(sys.argv[1], "w") as f:
    json.dump(summary, f, indent=1)
rows = [np.concatenate(list(res[k][:30:3]), 1) for k in ("ancestral", "ddim_diffusers", "ddim_eps_from_clipped_x0")]
Image.fromarray((np.concatenate(rows, 0) * 255).round().astype(np.uint8)).resize((10 * 64, 3 * 64), Image.NEAREST).save(sys.argv[2])
