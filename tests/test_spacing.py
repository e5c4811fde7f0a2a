"""``--spacing adm``: guided-diffusion's ``timestep_respacing`` grid and its respaced posterior.

The expected grids are written here from guided-diffusion's docstring of ``space_timesteps`` ("split the T
timesteps into equal sections — the first T % n one longer — and stride each to its count, rounding"), with exact
rational strides and Python's round-half-to-even; the posterior is checked against diffusers' DDPMScheduler
built from the respaced betas."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch

from minority import MinorityError, PixelPipeline
from minority.core.conditioning import Conditioning
from minority.core.rng import make_generators
from minority.core.sampling import StepContext, posterior_variance
from minority.core.schedules import respaced_betas, space_timesteps, timestep_pairs
from minority.methods.sgms import perturb_timestep


def _rule(T: int, counts: list[int]) -> list[int]:
    n = len(counts)
    out, start = [], 0
    for i, c in enumerate(counts):
        size = T // n + (1 if i < T % n else 0)
        stride = Fraction(size - 1, c - 1) if c > 1 else Fraction(1)
        out += [start + round(j * stride) for j in range(c)]
        start += size
    return out


@pytest.mark.parametrize("T,counts", [(1000, "250"), (1000, "10,10"), (100, "7"), (1000, "50"), (1000, "1000"),
                                      (10, "3,1,2"), (1000, "25"), (4000, "100")])
def test_grid_equals_the_published_rule(T, counts):
    assert space_timesteps(T, counts) == _rule(T, [int(c) for c in counts.split(",")])


def test_float_accumulation_at_an_exact_tie():
    """guided-diffusion adds the float stride step by step; at an exact rational tie (section 2 of 300 into
    10,15,20: 7 · 99/14 = 49.5) the sum lands just below it and rounds down. Ours does the same, so the grid is
    the code's, not the exact-arithmetic one — and that is the only difference."""
    got, exact = space_timesteps(300, "10,15,20"), _rule(300, [10, 15, 20])
    assert [(a, b) for a, b in zip(got, exact) if a != b] == [(149, 150)]


def test_grid_examples():
    assert space_timesteps(100, 7) == [0, 16, 33, 50, 66, 82, 99]  # 16.5 → 16, 49.5 → 50, 82.5 → 82: half to even
    g = space_timesteps(1000, "250")
    assert len(g) == 250 and g[:4] == [0, 4, 8, 12] and g[-1] == 999
    assert space_timesteps(1000, "10,10")[:3] == [0, 55, 111] and space_timesteps(1000, "10,10")[10] == 500
    with pytest.raises(MinorityError, match="cannot take 11 steps"):
        space_timesteps(10, 11)


def test_pairs_and_default_unchanged():
    from diffusers import DDPMScheduler

    sch = DDPMScheduler(num_train_timesteps=1000)
    pairs = timestep_pairs(sch, 250, "adm")
    kept = space_timesteps(1000, 250)
    assert [t for t, _ in pairs] == kept[::-1] and pairs[-1] == (0, -1) and pairs[0] == (999, kept[-2])
    ref = DDPMScheduler(num_train_timesteps=1000)
    ref.set_timesteps(250)
    assert [t for t, _ in timestep_pairs(sch, 250)] == [int(t) for t in ref.timesteps]  # default spacing as before
    with pytest.raises(MinorityError, match="spacing must be one of"):
        timestep_pairs(sch, 10, "even")


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_respaced_posterior_equals_ddpm_scheduler_of_respaced_betas(schedule):
    from diffusers import DDPMScheduler

    base = DDPMScheduler(num_train_timesteps=1000, beta_schedule=schedule)
    kept = space_timesteps(1000, 25)
    ref = DDPMScheduler(num_train_timesteps=len(kept), trained_betas=respaced_betas(base.alphas_cumprod, kept))
    ref.set_timesteps(len(kept))
    den = SimpleNamespace()
    ac = base.alphas_cumprod.double()
    for k in range(1, len(kept)):
        ctx = StepContext(index=0, num_steps=len(kept), t=kept[k], t_next=kept[k - 1], alpha=float(ac[kept[k]]),
                          alpha_next=float(ac[kept[k - 1]]), z=torch.zeros(1), cond=Conditioning(), uncond=None,
                          guidance=1.0, generators=[], denoiser=den)
        want = float(ref._get_variance(k))
        assert abs(posterior_variance(ctx) - want) <= 1e-5 * want
        for vt in ("fixed_large",):
            ctx.variance_type = vt
            assert abs(posterior_variance(ctx) - float(ref.betas[k])) <= 1e-5 * float(ref.betas[k])


def _learned_folder(path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(3)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=2, layers_per_block=1, block_out_channels=(32, 32),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=32)
    DDPMPipeline(unet, DDPMScheduler(num_train_timesteps=1000, variance_type="learned_range",
                                     beta_schedule="squaredcos_cap_v2")).save_pretrained(path)
    return path


def test_ancestral_on_adm_spacing_equals_diffusers_on_respaced_betas(tmp_path):
    """The whole ancestral run (learned range) on the respaced grid = diffusers' DDPMScheduler built from the
    respaced betas, the UNet fed the kept timesteps (guided-diffusion's timestep_map)."""
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.utils.torch_utils import randn_tensor

    folder = _learned_folder(tmp_path / "m")
    unet = UNet2DModel.from_pretrained(str(folder), subfolder="unet").eval()
    base = DDPMScheduler.from_pretrained(str(folder), subfolder="scheduler")
    kept = space_timesteps(1000, 10)
    ref = DDPMScheduler(num_train_timesteps=10, trained_betas=respaced_betas(base.alphas_cumprod, kept),
                        variance_type="learned_range", clip_sample=base.config.clip_sample)
    ref.set_timesteps(10)
    gens = make_generators([0, 1])
    x = randn_tensor((2, 1, 8, 8), generator=gens)
    with torch.no_grad():
        for k in ref.timesteps:
            x = ref.step(unet(x, kept[int(k)]).sample, k, x, generator=gens).prev_sample
    pipe = PixelPipeline.from_pretrained(str(folder))
    out = pipe(num_images=2, seeds=[0, 1], num_inference_steps=10, spacing="adm", output_type="latent")
    assert torch.allclose(out.latents, x, atol=1e-4)
    plain = pipe(num_images=2, seeds=[0, 1], num_inference_steps=10, output_type="latent")
    assert not torch.allclose(out.latents, plain.latents, atol=1e-3)  # the grids differ (999 vs 900 first)


def test_sgms_perturb_in_respaced_units():
    kept = space_timesteps(1000, 250)
    run = SimpleNamespace(spacing="adm", pairs=list(zip(kept[::-1], kept[::-1][1:] + [-1])))
    assert perturb_timestep(0.8, run) == kept[200]  # the authors' int(250 · 0.8) respaced index
    assert perturb_timestep(0.8, SimpleNamespace(spacing="scheduler", pairs=[])) is None


def test_adm_spacing_refused_on_text_to_image(tiny_sd):
    with pytest.raises(MinorityError, match="pixel models"):
        tiny_sd.plan(["a bag"], "ddim", steps=4, spacing="adm")




def test_resume_of_a_run_without_spacing(tmp_path):
    from minority.runs.resume import check_compatible

    old = {"model": "m", "method": "ancestral", "params": {}, "steps": 10, "seeds": [0]}
    check_compatible(old, {**old, "spacing": "scheduler"}, tmp_path)  # an older run used the scheduler grid
    with pytest.raises(MinorityError, match="spacing"):
        check_compatible(old, {**old, "spacing": "adm"}, tmp_path)


def test_sgms_on_adm_spacing_guides_the_authors_steps(tmp_path):
    """guide_every and switch-off on respaced indices t = S − 1 − i: guided when t % N == 0 and t > t_mid · S."""
    pipe = PixelPipeline.from_pretrained(str(_learned_folder(tmp_path / "m")))
    kw = dict(num_images=1, num_inference_steps=12, method="sgms", distance="l2", spacing="adm", output_type="latent")
    assert pipe(guide_every=4, **kw).trajectories[0]["step"] == [3, 7, 11]
    out = pipe(guide_every=2, schedule="switch-off", switch_off_at=0.5, **kw)
    assert out.trajectories[0]["step"] == [i for i in range(12) if (11 - i) % 2 == 0 and 11 - i > 6]  # [1, 3]
    assert out.settings["spacing"] == "adm"


def test_ddim_on_adm_spacing_is_guided_diffusions_ddim(tmp_path):
    """DDIM on the adm grid re-derives ε from the clipped x̂0 (guided-diffusion's ``ddim_sample``), written out here:
    x̂0 = clip((x − √(1−ᾱ)ε̂)/√ᾱ), ε = (x − √ᾱ·x̂0)/√(1−ᾱ), x' = √ᾱ'·x̂0 + √(1−ᾱ')·ε; diffusers' form (model ε̂ in the
    direction term) differs wherever clipping acts."""
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.utils.torch_utils import randn_tensor

    folder = _learned_folder(tmp_path / "m")
    unet = UNet2DModel.from_pretrained(str(folder), subfolder="unet").eval()
    abar = DDPMScheduler.from_pretrained(str(folder), subfolder="scheduler").alphas_cumprod.double()
    kept = space_timesteps(1000, 10)
    x0_form = randn_tensor((2, 1, 8, 8), generator=make_generators([0, 1])).double()
    eps_form = x0_form.clone()
    with torch.no_grad():
        for k in reversed(range(len(kept))):
            a, a_next = abar[kept[k]], (abar[kept[k - 1]] if k > 0 else torch.tensor(1.0, dtype=torch.float64))
            for name, x in (("gd", x0_form), ("diffusers", eps_form)):
                eps = unet(x.float(), kept[k]).sample[:, :1].double()
                x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
                if name == "gd":
                    eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
                new = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
                x0_form, eps_form = (new, eps_form) if name == "gd" else (x0_form, new)
    pipe = PixelPipeline.from_pretrained(str(folder))
    out = pipe(num_images=2, seeds=[0, 1], num_inference_steps=10, method="ddim", spacing="adm", output_type="latent")
    assert torch.allclose(out.latents.double(), x0_form, atol=1e-4)
    assert not torch.allclose(out.latents.double(), eps_form, atol=1e-2)  # clipping acted: the forms differ
