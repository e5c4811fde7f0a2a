"""Sampling core: per-image reproducibility, CADS, CFG++, annealed s, solver maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minority.core.rng import make_generators, randn_per_sample
from minority.core.sampling import Hook, sample
from minority.core.schedules import annealed_perturb_timestep, timestep_pairs
from minority.methods.cads import CADS, cads_gamma, cads_noise


@pytest.mark.parametrize("method,params", [("ddim", {}), ("cads", {"tau1": 0.3, "tau2": 0.8}), ("cfgpp", {})])
def test_image_k_identical_for_batch_sizes_1_2_3(tiny_sd, method, params):
    prompts = ["a sneaker", "a dress", "a bag"]
    seeds = [11, 12, 13]
    full = tiny_sd(prompts, seeds=seeds, num_inference_steps=4, guidance_scale=3.0 if method != "cfgpp" else 0.7,
                   method=method, output_type="latent", **params).latents
    for bs in (1, 2):
        parts = []
        for i in range(0, 3, bs):
            parts.append(tiny_sd(prompts[i : i + bs], seeds=seeds[i : i + bs], num_inference_steps=4,
                                 guidance_scale=3.0 if method != "cfgpp" else 0.7, method=method,
                                 output_type="latent", **params).latents)
        got = torch.cat(parts)
        # Same draws per image; float kernels may round differently with the batch size (latents of magnitude
        # ~7 then differ by ~1e-5). A wrong draw would differ by O(1).
        assert torch.allclose(got, full, atol=1e-4, rtol=1e-5), (bs, (got - full).abs().max())


def test_initial_latent_matches_diffusers_randn_tensor():
    from diffusers.utils.torch_utils import randn_tensor

    gens_a, gens_b = make_generators([5, 6]), make_generators([5, 6])
    a = randn_tensor((2, 4, 8, 8), generator=gens_a, device=torch.device("cpu"), dtype=torch.float32)
    b = randn_per_sample(gens_b, (4, 8, 8))
    assert torch.equal(a, b)


def test_cfgpp_lambda0_equals_unconditional_ddim(tiny_sd):
    kw = dict(seeds=[0, 1], num_inference_steps=5, output_type="latent", negative_prompt="a bag")
    a = tiny_sd(["a dress", "a coat"], method="cfgpp", guidance_scale=0.0, **kw).latents
    b = tiny_sd(["a bag", "a bag"], method="ddim", guidance_scale=1.0, **kw).latents  # DDIM on the null branch alone
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    c = tiny_sd(["a dress", "a coat"], method="cfgpp", guidance_scale=0.6, **kw).latents
    assert not torch.allclose(a, c, atol=1e-3)


def test_cfgpp_guidance_range_checked(tiny_sd):
    from minority import MinorityError

    with pytest.raises(MinorityError, match=r"\[0, 1\]"):
        tiny_sd("a dress", method="cfgpp", guidance_scale=7.5, num_inference_steps=2)


def test_cads_gamma_schedule():
    assert cads_gamma(0.5, 0.6, 0.9) == 1.0
    assert cads_gamma(0.95, 0.6, 0.9) == 0.0
    assert cads_gamma(0.75, 0.6, 0.9) == pytest.approx(0.5)


def test_cads_noise_psi_and_rescale():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 7, 5, generator=g) * 3 + 1
    n = torch.randn(2, 7, 5, generator=g)
    raw = cads_noise(y, 0.3, n, 0.25, psi=1.0, rescale=False)
    assert torch.allclose(raw, 0.3**0.5 * y + 0.25 * 0.7**0.5 * n)
    res = cads_noise(y, 0.3, n, 0.25, psi=1.0, rescale=True)
    dims = (1, 2)
    assert torch.allclose(res.mean(dims), y.mean(dims), atol=1e-5)
    assert torch.allclose(res.std(dims), y.std(dims), atol=1e-5)
    half = cads_noise(y, 0.3, n, 0.25, psi=0.5, rescale=True)
    assert torch.allclose(half, 0.5 * res + 0.5 * raw, atol=1e-6)
    assert torch.allclose(cads_noise(y, 0.3, n, 0.25, psi=0.0, rescale=True), raw)
    assert torch.allclose(cads_noise(y, 1.0, n, 0.25, psi=1.0, rescale=True), y, atol=1e-5)  # γ = 1: identity


class _Recorder(Hook):
    def __init__(self):
        self.embeds = []

    def before_step(self, ctx):
        self.embeds.append(ctx.cond.embeds.clone())


def test_cads_never_compounds(tiny_sd):
    """The embedding at step i is exactly f(clean, γ_i, n_i): replayed from fresh generators."""
    pipe = tiny_sd
    cond = pipe.prompt_encoder.encode(["a sneaker", "a shirt"])
    pairs = timestep_pairs(pipe.components.scheduler, 8)
    z = randn_per_sample(make_generators([1, 2]), (4, 8, 8))
    rec = _Recorder()
    hook = CADS(tau1=0.3, tau2=0.8, noise_scale=0.5, psi=0.7, rescale=True)
    sample(pipe.denoiser, z, cond, None, pairs, 1.0, make_generators([1, 2]), hooks=[hook, rec])
    gens = make_generators([1, 2])  # fresh, as passed to sample (z was drawn elsewhere)
    for i, used in enumerate(rec.embeds):
        gamma = cads_gamma(1 - i / 8, 0.3, 0.8)
        if gamma >= 1:
            assert torch.equal(used, cond.embeds)
            continue
        n = randn_per_sample(gens, cond.embeds.shape[1:])
        assert torch.allclose(used, cads_noise(cond.embeds, gamma, n, 0.5, 0.7, True), atol=1e-6), i


def test_cads_identity_when_gamma_is_one(tiny_sd):
    kw = dict(seeds=[3], num_inference_steps=6, guidance_scale=3.0, output_type="latent")
    a = tiny_sd("a coat", method="ddim", **kw).latents
    same = tiny_sd("a coat", method="cads", tau1=1.0, tau2=1.0, **kw).latents  # γ = 1 at every step
    assert torch.equal(a, same)
    noised = tiny_sd("a coat", method="cads", **kw).latents
    assert not torch.allclose(a, noised, atol=1e-4)


def test_cads_sdxl_pooled_noised(tiny_sdxl):
    rec = []

    class R(Hook):
        def before_step(self, ctx):
            rec.append(ctx.cond.pooled.clone())

    pipe = tiny_sdxl
    cond = pipe.prompt_encoder.encode(["a bag"])
    cond.time_ids = torch.tensor([[16.0, 16, 0, 0, 16, 16]])
    pairs = timestep_pairs(pipe.components.scheduler, 4)
    z = randn_per_sample(make_generators([0]), (4, 8, 8))
    sample(pipe.denoiser, z, cond, None, pairs, 1.0, make_generators([0]), hooks=[CADS(), R()])
    assert not torch.equal(rec[0], cond.pooled)  # τ = 1 ≥ τ2: fully noised
    assert torch.equal(rec[-1], cond.pooled)  # τ = 0.25 ≤ τ1: clean


def test_annealed_s_lightning_grid_and_range(tiny_sdxl):
    sched = tiny_sdxl.components.scheduler
    from diffusers import DDIMScheduler

    trailing = DDIMScheduler.from_config(sched.config, timestep_spacing="trailing")
    pairs = timestep_pairs(trailing, 4)
    assert [annealed_perturb_timestep(tn, 1000) for _, tn in pairs] == [250, 500, 750, 999]
    for steps in (1, 2, 4, 10, 50, 1000):
        for spacing in ("leading", "trailing", "linspace"):
            s = DDIMScheduler.from_config(sched.config, timestep_spacing=spacing)
            for _, tn in timestep_pairs(s, steps):
                assert 1 <= annealed_perturb_timestep(tn, 1000) <= 999


def test_timestep_pairs_end_with_final_alpha(tiny_sd):
    den = tiny_sd.denoiser
    pairs = timestep_pairs(tiny_sd.components.scheduler, 10)
    assert pairs[-1][1] == -1 and pairs[0][0] > pairs[1][0]
    assert den.alpha(-1) == pytest.approx(float(tiny_sd.components.scheduler.final_alpha_cumprod))


def test_v_prediction_conversion_consistent():
    from minority.core.denoiser import Denoiser

    ac = torch.linspace(0.99, 0.01, 1000)
    d = Denoiser(torch.nn.Linear(1, 1), ac, "v_prediction")
    z, v = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    p = d.convert(z, 500, v)
    a = float(ac[500])
    assert torch.allclose(z, a**0.5 * p.x0 + (1 - a) ** 0.5 * p.eps, atol=1e-5)  # z = √ᾱ x0 + √(1−ᾱ) ε
    np.testing.assert_allclose(p.x0.numpy(), (a**0.5 * z - (1 - a) ** 0.5 * v).numpy(), atol=1e-6)
