"""Flow-matching backbones (SPEC §3.5): tiny random SD3 / FLUX pipelines against diffusers' own pipelines."""

from __future__ import annotations

import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline

from minority import MinorityPipeline
from minority.core.rng import make_generators
from minority.errors import MinorityError
from minority.pipelines.tiny_flow import build_tiny_flow

H = W = 16


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    return {fam: build_tiny_flow(root / fam, fam) for fam in ("sd3", "flux-dev", "flux-schnell")}


@pytest.fixture(scope="module")
def pipes(folders):
    return {fam: MinorityPipeline.from_pretrained(str(f)) for fam, f in folders.items()}


def _reference(folder, fam: str, prompt: str, steps: int, guidance: float, seed: int) -> torch.Tensor:
    cls = StableDiffusion3Pipeline if fam == "sd3" else FluxPipeline
    ref = cls.from_pretrained(str(folder))
    ref.set_progress_bar_config(disable=True)
    out = ref(prompt, num_inference_steps=steps, guidance_scale=guidance, height=H, width=W,
              generator=torch.Generator().manual_seed(seed), output_type="latent").images
    if fam != "sd3":
        out = ref._unpack_latents(out, H, W, ref.vae_scale_factor)
    return out


@pytest.mark.parametrize("fam,guidance", [("sd3", 4.0), ("sd3", 1.0), ("flux-dev", 3.5), ("flux-schnell", 0.0)])
def test_euler_matches_diffusers(folders, pipes, fam, guidance):
    """`ddim` on a flow model = the pipeline's Euler flow sampler for the same seed (initial latent drawn alike)."""
    steps, seed = 4, 7
    ref = _reference(folders[fam], fam, "a photo of a dog", steps, guidance, seed)
    out = pipes[fam]("a photo of a dog", method="ddim", num_inference_steps=steps, guidance_scale=guidance,
                     height=H, width=W, seeds=[seed], output_type="latent")
    assert out.latents.shape == ref.shape
    assert torch.allclose(out.latents, ref, atol=1e-4, rtol=1e-4), (out.latents - ref).abs().max()
    calls = steps  # one transformer call per step: CFG batched (SD3 w != 1), none for FLUX / w = 1
    assert out.settings["unet_calls"] == calls
    two = fam == "sd3" and guidance != 1.0
    assert out.settings["unet_sample_evals"] == steps * (2 if two else 1)


METHOD_CALLS = {  # (method, params) -> transformer calls for 4 steps, guidance w != 1 on SD3
    ("cads", ()): 4, ("null-prompt", ()): 4, ("cfgpp", ()): 4,
    ("sgms", (("guide_every", 2),)): 4 + 2 * 2,  # guided steps: forward with grad + reconstruction + ε_∅
    ("minority-prompt", (("opt_every", 2), ("opt_steps", 2))): 4 + 2 * 2 * 2,  # 2 forwards per iteration
}


@pytest.mark.parametrize("fam", ["sd3", "flux-dev"])
@pytest.mark.parametrize("method,params", list(METHOD_CALLS))
def test_methods_run_at_their_call_floor(pipes, fam, method, params):
    pipe, p = pipes[fam], dict(params)
    if fam == "flux-dev" and method in ("null-prompt", "cfgpp"):
        with pytest.raises(MinorityError, match="guidance as an embedding"):
            pipe("a dog", method=method, num_inference_steps=4, height=H, width=W, output_type="latent")
        return
    out = pipe("a dog", method=method, num_inference_steps=4, guidance_scale=0.6 if method == "cfgpp" else 3.0,
               height=H, width=W, seeds=[1], output_type="latent", **p)
    assert torch.isfinite(out.latents).all()
    calls = METHOD_CALLS[(method, params)]
    if fam == "flux-dev" and method == "sgms":
        calls = 4 + 2  # no unconditional branch: the gradient forward is reused, reconstruction only
    assert out.settings["unet_calls"] == calls
    if fam == "flux-dev":  # no unconditional pass ever: one sample evaluation per call
        assert out.settings["unet_sample_evals"] == out.settings["unet_calls"]


def test_no_uncond_pass_at_w1(pipes):
    out = pipes["sd3"]("a dog", method="minority-prompt", num_inference_steps=4, guidance_scale=1.0, height=H,
                       width=W, seeds=[1], output_type="latent", opt_every=2, opt_steps=1)
    assert out.settings["unet_sample_evals"] == out.settings["unet_calls"] == 4 + 2 * 2


@pytest.mark.parametrize("fam,method", [("sd3", "minority-prompt"), ("sd3", "cads"), ("flux-dev", "minority-prompt"),
                                        ("flux-dev", "sgms")])
def test_batch_invariance(pipes, fam, method):
    """Image k is the same alone or in a batch (per-image generators, per-sample tokens)."""
    kw = dict(method=method, num_inference_steps=3, guidance_scale=3.0, height=H, width=W, output_type="latent")
    both = pipes[fam](["a dog", "a cat"], seeds=[4, 9], **kw).latents
    alone = pipes[fam](["a cat"], seeds=[9], **kw).latents
    assert torch.allclose(both[1:], alone, atol=1e-5)


@pytest.mark.parametrize("fam", ["sd3", "flux-schnell"])
def test_sgms_scale_zero_is_euler(pipes, fam):
    g = 3.0 if fam == "sd3" else 0.0
    kw = dict(num_inference_steps=3, guidance_scale=g, height=H, width=W, seeds=[2], output_type="latent")
    base = pipes[fam]("a dog", method="ddim", **kw)
    zero = pipes[fam]("a dog", method="sgms", scale=0.0, **kw)
    assert torch.equal(base.latents, zero.latents)
    assert zero.settings["unet_calls"] == base.settings["unet_calls"]


def test_flow_renoise_and_parametrisation(pipes):
    """x̂0 = x − σv̂, ε̂ = x + (1−σ)v̂ on the flow sample; VP re-noising of level ᾱ(σ_s) is (1−σ_s)x̂0 + σ_s ε."""
    from minority.core.denoiser import flow_alpha, flow_scale, renoise

    x0, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for s in (0.2, 0.5, 0.9):
        z = renoise(x0, eps, flow_alpha(s))
        assert torch.allclose(z * flow_scale(s), (1 - s) * x0 + s * eps, atol=1e-6)
    den = pipes["sd3"].denoiser
    v = eps - x0
    pred = den.convert(((1 - 0.3) * x0 + 0.3 * eps) / flow_scale(0.3), 300.0, v)
    assert torch.allclose(pred.x0, x0, atol=1e-5) and torch.allclose(pred.eps, eps, atol=1e-5)


def test_flux_null_prompt_refused_and_bad_input(pipes):
    with pytest.raises(MinorityError, match="no negative prompt"):
        pipes["flux-dev"]("a dog", method="null-prompt", height=H, width=W)
    with pytest.raises(MinorityError, match="takes no guidance"):
        pipes["flux-schnell"]("a dog", guidance_scale=3.0, height=H, width=W)
    with pytest.raises(MinorityError, match="multiple of 4"):
        pipes["flux-dev"]("a dog", height=18, width=W)
    with pytest.raises(MinorityError, match="multiple of 2"):
        pipes["sd3"]("a dog", height=17, width=W)


def test_mismatched_text_encoder_named(folders, tmp_path):
    """A folder whose T5 does not fit the transformer: one line naming the dimension."""
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(folders["sd3"], bad)
    other = build_tiny_flow(tmp_path / "other", "sd3", t5_dim=96)
    shutil.rmtree(bad / "text_encoder_3")
    shutil.copytree(other / "text_encoder_3", bad / "text_encoder_3")
    with pytest.raises(MinorityError, match="d_model 96 does not fit the transformer's joint_attention_dim 64"):
        MinorityPipeline.from_pretrained(str(bad))
