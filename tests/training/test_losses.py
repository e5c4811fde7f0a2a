from __future__ import annotations

import torch

from minority.training.diffusion_losses import PosteriorTerms, discretized_gaussian_nll, normal_kl


def _scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range")


def test_normal_kl_zero_and_positive():
    m, lv = torch.randn(5), torch.randn(5)
    assert normal_kl(m, lv, m, lv).abs().max() < 1e-6
    assert (normal_kl(m, lv, m + 1, lv) > 0).all()


def test_vlb_vanishes_for_perfect_model():
    sched = _scheduler()
    terms = PosteriorTerms(sched.alphas_cumprod)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([1, 10, 500, 999])
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    vlb = terms.vlb_bits(x0, xt, t, noise, torch.full_like(x0, -1.0))
    assert vlb.abs().max() < 1e-3
    worse = terms.vlb_bits(x0, xt, t, noise + 0.5, torch.full_like(x0, -1.0))
    assert (worse > vlb).all()


def test_model_logvar_matches_diffusers_learned_range():
    sched = _scheduler()
    terms = PosteriorTerms(sched.alphas_cumprod)
    for t in (1, 37, 400, 999):
        v = torch.tensor([[[[0.3]]]])
        ref = sched._get_variance(t, predicted_variance=v)
        ours = terms.model_logvar(torch.tensor([t]), v)
        torch.testing.assert_close(ours.flatten(), ref.flatten(), rtol=1e-4, atol=1e-4)


def test_discretized_nll_is_a_distribution_over_256_levels():
    levels = torch.linspace(-1, 1, 256)
    mean, logvar = torch.full_like(levels, 0.1), torch.full_like(levels, -3.0)
    total = torch.exp(-discretized_gaussian_nll(levels, mean, logvar)).sum()
    assert abs(float(total) - 1.0) < 1e-2
