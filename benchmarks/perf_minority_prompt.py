"""MinorityPrompt cost vs DDIM: UNet call counts next to the floor, and the wall-time ratio next to the ratio
predicted from those counts and measured unit costs (issue 3). Prints, asserts nothing.

    python benchmarks/perf_minority_prompt.py --model tiny-random-sd --steps 20 --batch 2
"""

from __future__ import annotations

import argparse
import time

import torch

from minority import MinorityPipeline
from minority.core.rng import make_generators, randn_per_sample


def timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__)
    ap.add_argument("--model", default="tiny-random-sd")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--opt-every", type=int, default=5)
    ap.add_argument("--opt-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    pipe = MinorityPipeline.from_pretrained(a.model)
    c, den = pipe.components, pipe.denoiser
    prompts = [f"a photo of a sneaker {i}" for i in range(a.batch)]
    seeds = list(range(a.batch))
    kw = dict(num_inference_steps=a.steps, guidance_scale=a.guidance, seeds=seeds, output_type="latent")
    mp_kw = dict(method="minority-prompt", opt_every=a.opt_every, opt_steps=a.opt_steps)

    # unit costs: sampling call (CFG batch 2B, no grad) and one optimisation iteration's forward+backward (B)
    cond, uncond = pipe.prepare(prompts, None, a.guidance, "ddim", c.default_size, c.default_size)
    z = randn_per_sample(make_generators(seeds), (c.unet.config.in_channels, c.default_size // c.vae_scale_factor,
                                                  c.default_size // c.vae_scale_factor))
    from minority.core.conditioning import Conditioning

    both = Conditioning.cat([uncond, cond]) if uncond is not None else cond
    zz = torch.cat([z, z]) if uncond is not None else z

    def sampling_call():
        with torch.no_grad():
            den.raw(zz, 500, both)

    def grad_fwd_bwd():
        zg = z.clone()
        e = cond.embeds.clone().requires_grad_(True)
        out = den.raw(zg, 500, Conditioning(embeds=e, pooled=cond.pooled, time_ids=cond.time_ids))
        out.sum().backward()

    f_s, g = timed(sampling_call), timed(grad_fwd_bwd)

    t_ddim = timed(lambda: pipe(prompts, method="ddim", **kw), repeat=2)
    calls0 = den.calls
    t_mp = timed(lambda: pipe(prompts, **kw, **mp_kw), repeat=2)
    out = pipe(prompts, **kw, **mp_kw)
    n_opt = len(out.trajectories[0].get("step", []))
    calls = out.settings["unet_calls"]
    floor = a.steps + n_opt * a.opt_steps * 2
    predicted = (a.steps * f_s + n_opt * a.opt_steps * 2 * g) / (a.steps * f_s)
    measured = t_mp / t_ddim
    _ = calls0
    print(f"model={a.model} steps={a.steps} batch={a.batch} guidance={a.guidance} opt_every={a.opt_every} "
          f"opt_steps={a.opt_steps} optimised steps={n_opt}")
    print(f"UNet forward calls per run: minority-prompt {calls} (floor {floor} = {a.steps} sampling + {n_opt}×{a.opt_steps}×2);"
          f" backward passes {n_opt * a.opt_steps}; ddim {a.steps}")
    print(f"unit costs: sampling call {f_s * 1e3:.1f} ms, forward+backward with grad {g * 1e3:.1f} ms")
    print(f"wall: ddim {t_ddim:.3f} s, minority-prompt {t_mp:.3f} s")
    print(f"ratio minority-prompt/ddim: measured {measured:.2f}, predicted from counts {predicted:.2f} "
          f"(deviation {100 * (measured / predicted - 1):+.1f}%)")


if __name__ == "__main__":
    main()
