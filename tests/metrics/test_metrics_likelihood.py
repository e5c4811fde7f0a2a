"""PF-ODE likelihood on an analytic Gaussian data model (exact ε-predictor in closed form)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from minority.errors import MinorityError
from minority.metrics import (
    continuous_alpha_bar,
    likelihood_for_pipeline,
    pf_ode_bits_per_dim,
    pf_ode_log_likelihood,
)
from minority.metrics.likelihood import bits_per_dim, continuous_beta, draw_probes

SHAPE = (2, 3, 3)
D = 18


def _schedule(t=1000):
    betas = torch.linspace(1e-4, 0.02, t, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


class GaussianModel:
    """Data x0 ~ N(mu, Q diag(lam) Q^T); exact ε̂(x, τ) = σ (ᾱΣ + (1-ᾱ)I)^{-1} (x - √ᾱ mu)."""

    def __init__(self, seed: int, rotate: bool):
        g = torch.Generator().manual_seed(seed)
        self.mu = torch.randn(D, generator=g, dtype=torch.float64) * 0.5
        self.lam = torch.linspace(0.1, 1.5, D, dtype=torch.float64)
        self.q = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))[0] if rotate else torch.eye(D, dtype=torch.float64)
        self.ab = _schedule()
        self.calls = 0

    @property
    def cov(self):
        return self.q @ torch.diag(self.lam) @ self.q.T

    def sample(self, n: int, seed: int) -> torch.Tensor:
        z = torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return (self.mu + (z * self.lam.sqrt()) @ self.q.T).reshape(n, *SHAPE)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.distributions.MultivariateNormal(self.mu, self.cov).log_prob(x.reshape(len(x), D))

    def eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        a = continuous_alpha_bar(t, self.ab).to(x.dtype)[:, None]  # (B, 1)
        xf = x.reshape(len(x), D) - a.sqrt() * self.mu
        coef = (1 - a).sqrt() / (a * self.lam + (1 - a))  # (B, D): σ / eigenvalues of ᾱΣ + (1-ᾱ)I
        return (((xf @ self.q) * coef) @ self.q.T).reshape(x.shape)


def test_continuous_schedule_interpolates_the_table():
    ab = _schedule()
    t = torch.arange(1000, dtype=torch.float64)
    torch.testing.assert_close(continuous_alpha_bar(t, ab), ab, rtol=1e-12, atol=0)
    mid = continuous_alpha_bar(torch.tensor(10.5), ab)
    assert mid.item() == pytest.approx(math.sqrt(ab[10].item() * ab[11].item()), rel=1e-12)
    # β(τ) is -d log ᾱ / dτ
    h = 1e-6
    t0 = torch.tensor(10.3, dtype=torch.float64)
    num = -(continuous_alpha_bar(t0 + h, ab).log() - continuous_alpha_bar(t0, ab).log()) / h
    assert continuous_beta(t0, ab).item() == pytest.approx(num.item(), rel=1e-5)


def test_bits_per_dim_matches_exact_gaussian_density():
    model = GaussianModel(0, rotate=False)
    x0 = model.sample(4, seed=1)
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    bpd = pf_ode_bits_per_dim(x0, model.eps, model.ab, probes=1, generators=gens)  # Rademacher: exact trace here
    exact = bits_per_dim(model.log_prob(x0), D)
    rel = ((bpd - exact).abs() / exact.abs()).max().item()
    assert rel < 0.02, rel
    # with the 8-bit pixel convention the offset is log2(256 / 2) = 7 bits/dim
    torch.testing.assert_close(bits_per_dim(model.log_prob(x0), D, bins=256, data_range=2.0), exact + 7.0)


def test_exact_trace_on_a_rotated_gaussian():
    model = GaussianModel(1, rotate=True)
    x0 = model.sample(2, seed=2)
    res = pf_ode_log_likelihood(x0, model.eps, model.ab, probe="exact", rtol=1e-3, atol=1e-3)
    exact = model.log_prob(x0)
    rel_bpd = ((bits_per_dim(res.log_likelihood, D) - bits_per_dim(exact, D)).abs() / bits_per_dim(exact, D).abs())
    assert rel_bpd.max().item() < 0.02
    assert res.nfe > 10


def test_hutchinson_estimate_converges_with_probes():
    model = GaussianModel(2, rotate=True)
    x0 = model.sample(8, seed=3)
    exact = model.log_prob(x0)

    def rms(probes):
        gens = [torch.Generator().manual_seed(100 + i) for i in range(8)]
        r = pf_ode_log_likelihood(x0, model.eps, model.ab, probes=probes, rtol=1e-4, atol=1e-4, generators=gens,
                                  probe="gaussian")
        return (r.log_likelihood - exact).pow(2).mean().sqrt().item()

    e1, e8, e64 = rms(1), rms(8), rms(64)
    assert e64 < 0.5 * e1, (e1, e8, e64)
    assert e64 < e8 * 1.2


def test_probes_come_from_per_image_generators():
    a = draw_probes([torch.Generator().manual_seed(s) for s in (3, 7)], SHAPE, 2, "rademacher")
    b = draw_probes([torch.Generator().manual_seed(7)], SHAPE, 2, "rademacher")
    assert a.shape == (2, 2, *SHAPE)
    torch.testing.assert_close(a[:, 1], b[:, 0])
    assert set(a.unique().tolist()) == {-1.0, 1.0}
    with pytest.raises(MinorityError, match="one generator per image"):
        pf_ode_log_likelihood(torch.zeros(2, *SHAPE), lambda x, t: x, _schedule(), generators=[torch.Generator()])


class _FnUNet(torch.nn.Module):
    """A 'UNet' wrapping an analytic ε-predictor, returning epsilon or v like a diffusers model."""

    def __init__(self, model: GaussianModel, prediction_type: str):
        super().__init__()
        self.model, self.prediction_type = model, prediction_type
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, t, **kw):
        eps = self.model.eps(x, t)
        if self.prediction_type == "v_prediction":
            a = continuous_alpha_bar(t, self.model.ab).to(x.dtype).view(-1, 1, 1, 1)
            x0_hat = (x - (1 - a).sqrt() * eps) / a.sqrt()
            eps = a.sqrt() * eps - (1 - a).sqrt() * x0_hat  # v = √ᾱ ε - √(1-ᾱ) x̂0
        return SimpleNamespace(sample=eps)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_pipeline_wrapper_converts_predictions(prediction_type):
    model = GaussianModel(0, rotate=False)
    x0 = model.sample(2, seed=4)
    sched = SimpleNamespace(alphas_cumprod=model.ab.float(), config=SimpleNamespace(prediction_type=prediction_type))
    sched.alphas_cumprod = model.ab
    got = likelihood_for_pipeline(x0, _FnUNet(model, prediction_type), sched, probes=1, rtol=1e-4, atol=1e-4, bins=None)
    ref = pf_ode_bits_per_dim(x0, model.eps, model.ab, probes=1, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_pipeline_wrapper_with_tiny_diffusers_models():
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4).eval()
    with torch.no_grad():  # a random UNet's ε̂/σ is huge near t=0 (a stiff ODE): keep its output small
        unet.conv_out.weight.mul_(0.01)
        unet.conv_out.bias.zero_()
    sched = DDPMScheduler(num_train_timesteps=100)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    bpd = likelihood_for_pipeline(x, unet, sched, generators=gens, rtol=1e-3, atol=1e-3)
    ab = sched.alphas_cumprod.double()
    manual = pf_ode_bits_per_dim(x, lambda z, t: unet(z, t).sample, ab, generators=[torch.Generator().manual_seed(s) for s in (0, 1)],
                                 rtol=1e-3, atol=1e-3, bins=256)
    torch.testing.assert_close(bpd, manual)
    assert torch.isfinite(bpd).all()
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=3, block_out_channels=(8,), norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",)).eval()
    lat_bpd = likelihood_for_pipeline(x, unet, sched, vae=vae, rtol=1e-3, atol=1e-3)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
    manual = pf_ode_bits_per_dim(z, lambda z_, t: unet(z_, t).sample, ab, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(lat_bpd, manual)
