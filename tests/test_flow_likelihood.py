"""Flow likelihood (SPEC §3.5): the PF-ODE dx/dσ = v with Hutchinson's divergence, on an analytic Gaussian."""

from __future__ import annotations

import math

import torch

from minority.core.conditioning import Conditioning
from minority.core.rng import make_generators
from minority.metrics.flow_likelihood import denoiser_velocity, flow_log_likelihood
from minority.metrics.likelihood import bits_per_dim
from minority.pipelines.tiny_flow import build_tiny_flow


def test_gaussian_data_exact_log_likelihood():
    """x0 ~ N(μ, s²I): x_σ ~ N((1−σ)μ, m(σ)I), m = (1−σ)²s² + σ², and the exact velocity is
    v = −μ + m'/(2m)(x − (1−σ)μ); the ODE's log p must equal log N(x0; μ, s²I)."""
    mu, s = 0.7, 0.5

    def v(x, sig):
        m = (1 - sig) ** 2 * s**2 + sig**2
        dm = -2 * (1 - sig) * s**2 + 2 * sig
        return -mu + dm / (2 * m) * (x - (1 - sig) * mu)

    torch.manual_seed(0)
    x0 = mu + s * torch.randn(3, 2, 2, 2, dtype=torch.float64)
    out = flow_log_likelihood(v, x0, make_generators([0, 1, 2]), probes=1, rtol=1e-8, atol=1e-8)
    D = 8
    exact = -0.5 * (((x0 - mu) / s) ** 2).flatten(1).sum(1) - D * math.log(s) - 0.5 * D * math.log(2 * math.pi)
    assert torch.allclose(out.log_likelihood, exact, atol=1e-5), (out.log_likelihood, exact)
    gauss = flow_log_likelihood(v, x0, make_generators([0, 1, 2]), probes=64, probe="gaussian", rtol=1e-6, atol=1e-6)
    assert torch.allclose(gauss.log_likelihood, exact, atol=0.5)  # Gaussian probes: unbiased, noisy
    assert torch.isfinite(bits_per_dim(out.log_likelihood, D)).all()


def test_runs_on_a_tiny_flow_transformer(tmp_path):
    from minority import MinorityPipeline

    pipe = MinorityPipeline.from_pretrained(str(build_tiny_flow(tmp_path / "f", "flux-schnell")))
    cond = pipe.prompt_encoder.encode(["a dog"])
    x0 = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    out = flow_log_likelihood(denoiser_velocity(pipe.denoiser, cond), x0, make_generators([0]), rtol=1e-3, atol=1e-3)
    assert torch.isfinite(out.log_likelihood).all() and out.nfe > 0
    assert isinstance(cond, Conditioning)


def test_evaluate_likelihood_on_a_flow_model_is_the_flow_pf_ode(tmp_path):
    """``evaluate``'s likelihood metric on an SD3 folder: the image's VAE latent ((mean − shift)·scale) integrated
    along dx/dσ = v̂ under the row's prompt, in bits/dim of the latent space (not the VP ε-ODE of SD/pixel models)."""
    from diffusers import AutoencoderKL

    from minority import MinorityPipeline
    from minority.runs.model_scores import PipelineScores

    folder = build_tiny_flow(tmp_path / "sd3", "sd3")
    settings = {"likelihood_probes": 1, "likelihood_probe": "rademacher", "likelihood_rtol": 1e-4,
                "likelihood_atol": 1e-4}
    fn, info = PipelineScores().likelihood(str(folder), settings, "cpu")
    assert info["space"] == "latent" and info["ode"].startswith("flow")
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    rows = [{"prompt": "a dog"}, {"prompt": "a cat"}]
    got = fn(x, make_generators([5, 6]), rows)
    vae = AutoencoderKL.from_pretrained(str(folder), subfolder="vae")
    with torch.no_grad():
        z0 = (vae.encode(x).latent_dist.mean - vae.config.shift_factor) * vae.config.scaling_factor
    pipe = MinorityPipeline.from_pretrained(str(folder))
    cond = pipe.prompt_encoder.encode(["a dog", "a cat"])
    ref = flow_log_likelihood(denoiser_velocity(pipe.denoiser, cond), z0.double(), make_generators([5, 6]),
                              rtol=1e-4, atol=1e-4)
    assert got.shape == (2,) and torch.isfinite(got).all()
    torch.testing.assert_close(got, bits_per_dim(ref.log_likelihood, z0[0].numel()), rtol=0, atol=1e-5)
