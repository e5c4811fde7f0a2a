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
    no_t5 = not (folder / "text_encoder_3").exists() and fam == "sd3"
    ref = cls.from_pretrained(str(folder), **({"text_encoder_3": None, "tokenizer_3": None} if no_t5 else {}))
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
    assert torch.allclose(out.latents, ref, atol=2e-5, rtol=0), (out.latents - ref).abs().max()
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


def test_minority_objective_gradient_matches_finite_differences(folders):
    """∇_v J̃ on a flow model (SD3: token in CLIP-L and CLIP-G, pooled recomputed) equals central differences of
    the same expression with the stop-gradient branch frozen at v0 (float64)."""
    from minority.core.context import RunContext
    from minority.core.rng import randn_per_sample
    from minority.methods.minority_prompt import (
        MinorityObjective,
        MinorityPrompt,
        ObjectiveInputs,
        PromptOptimizer,
    )

    pipe = MinorityPipeline.from_pretrained(str(folders["sd3"]), torch_dtype=torch.float64)
    enc, den, prompts = pipe.prompt_encoder, pipe.denoiser, ["a dog", "a cat"]
    cond, uncond = enc.encode(prompts), enc.encode(["", ""])
    run = RunContext(family="sd3", latent=True, prompts=prompts, seeds=[0, 1], group_ids=[0, 1], steps=4, guidance=3.0,
                     pairs=(), prompt_encoder=enc, cond=cond, uncond=uncond, generators=make_generators([0, 1]))
    lam = 0.7
    opt = PromptOptimizer(MinorityPrompt(opt_every=1).resolved("sd3"), run, MinorityObjective(sg_lambda=lam))
    v0 = [v.double() + 0.1 * torch.randn_like(v.double()) for v in opt.v]
    z = randn_per_sample(make_generators([7, 8]), (4, 8, 8)).double()
    t, s = 700.0, 300.0

    def make(vv):
        return ObjectiveInputs(den, z, t, s, opt.encode_v(vv), cond, uncond, 3.0, make_generators([1, 2]), [0, 1])

    def parts(vv):
        o = make(vv)
        x1 = o.first_x0()
        n = randn_per_sample(o.generators, x1.shape[1:]).double()
        x_s = (1 - 0.3) * x1 + 0.3 * n  # the flow re-noising at σ_s = 0.3, written out
        x2 = den(x_s / (0.7**2 + 0.3**2) ** 0.5, s, cond).x0
        return x1, x2

    with torch.no_grad():
        x1_0, x2_0 = parts(v0)

    def f(vv):
        x1, x2 = parts(vv)
        return ((x1 - x2_0).pow(2).flatten(1).sum(1) + lam * (x1_0 - x2).pow(2).flatten(1).sum(1)).sum()

    v = [x.clone().requires_grad_(True) for x in v0]
    J = MinorityObjective(sg_lambda=lam)(make(v))
    J.sum().backward()
    d = [torch.randn_like(x) for x in v0]
    h = 1e-5
    with torch.no_grad():
        assert torch.allclose(J.sum(), f(v0), rtol=1e-10)
        fd = (f([a + h * b for a, b in zip(v0, d)]) - f([a - h * b for a, b in zip(v0, d)])) / (2 * h)
    ad = sum((x.grad * y).sum() for x, y in zip(v, d))
    assert all(x.grad.abs().sum() > 0 for x in v)  # both CLIP tokens get a gradient
    assert torch.allclose(ad, fd, rtol=1e-5, atol=1e-8), (float(ad), float(fd))


def test_sd3_token_file_reproduces_conditioning_in_plain_diffusers(folders, pipes, tmp_path):
    """The saved clip_l / clip_g token, added to a plain StableDiffusion3Pipeline's tokenizers and embedding tables,
    gives the optimised conditioning (sequence and pooled embeddings)."""
    from safetensors.torch import load_file

    from minority.core.text import TokenOverride
    from minority.core.tokens import insert_placeholders
    from minority.runs.folder import save_token_embeds

    out = pipes["sd3"]("a dog", method="minority-prompt", num_inference_steps=2, guidance_scale=3.0, height=H,
                       width=W, seeds=[3], output_type="latent", opt_every=1)
    extra = out.extras[0]
    save_token_embeds(extra, tmp_path / "tok.safetensors")
    state = load_file(str(tmp_path / "tok.safetensors"))
    assert set(state) == {"clip_l", "clip_g"}
    ref = StableDiffusion3Pipeline.from_pretrained(str(folders["sd3"]))
    name = extra["placeholder"]
    for tok, te, key in ((ref.tokenizer, ref.text_encoder, "clip_l"), (ref.tokenizer_2, ref.text_encoder_2, "clip_g")):
        tok.add_tokens([name])
        te.resize_token_embeddings(len(tok))
        with torch.no_grad():
            te.get_input_embeddings().weight[tok.convert_tokens_to_ids(name)] = state[key][0]
    # T5 carries no token (the plain prompt), as --token-encoders clip
    emb, _, pooled, _ = ref.encode_prompt(f"a dog {name}", None, "a dog", do_classifier_free_guidance=False)
    enc = pipes["sd3"].prompt_encoder
    ids = [insert_placeholders(tk, ["a dog"], 1, "end", marker=99999) for tk in enc.tokenizers]
    over = [TokenOverride(torch.tensor([[99999]]), state[k][None]) for k in ("clip_l", "clip_g")]
    with torch.no_grad():
        ours = enc.encode_ids(ids + enc.fixed_ids(["a dog"]), over)
    assert torch.allclose(emb, ours.embeds, atol=1e-5)
    assert torch.allclose(pooled, ours.pooled, atol=1e-5)


def test_sd3_without_t5_and_hub_id(tmp_path, monkeypatch):
    """An SD3 folder without T5 (zeros, as diffusers) matches the pipeline, loaded by hub id from a hub-layout cache."""
    folder = build_tiny_flow(tmp_path / "src", "sd3", with_t5=False)
    snap = tmp_path / "hub" / "models--tiny--sd3" / "snapshots" / ("0" * 40)
    import shutil

    shutil.copytree(folder, snap)
    (tmp_path / "hub" / "models--tiny--sd3" / "refs").mkdir()
    (tmp_path / "hub" / "models--tiny--sd3" / "refs" / "main").write_text("0" * 40)
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    ref = _reference(folder, "sd3", "a cat", 3, 2.0, 5)
    pipe = MinorityPipeline.from_pretrained("tiny/sd3")
    assert pipe.prompt_encoder.t5_encoder is None
    out = pipe("a cat", num_inference_steps=3, guidance_scale=2.0, height=H, width=W, seeds=[5], output_type="latent")
    assert torch.allclose(out.latents, ref, atol=1e-4)


def test_gradient_checkpointing_same_result(folders):
    kw = dict(method="minority-prompt", num_inference_steps=2, guidance_scale=3.0, height=H, width=W, seeds=[1],
              output_type="latent", opt_every=1, opt_steps=1)
    plain = MinorityPipeline.from_pretrained(str(folders["sd3"]))("a dog", **kw).latents
    ckpt = MinorityPipeline.from_pretrained(str(folders["sd3"]))("a dog", gradient_checkpointing=True, **kw).latents
    assert torch.allclose(plain, ckpt, atol=1e-5)


def test_cli_euler_seed_equals_diffusers_generator(folders, tmp_path):
    """`minority generate --method euler --seed S` writes the image of pipe(..., generator=manual_seed(S))."""
    import numpy as np
    from PIL import Image

    from minority.cli.main import main

    out = tmp_path / "run"
    assert main(["generate", "a photo of a dog", "--model", str(folders["sd3"]), "--method", "euler", "--seed", "6",
                 "--steps", "3", "--guidance", "4", "--height", str(H), "--width", str(W), "--out", str(out)]) == 0
    ours = np.asarray(Image.open(next((out / "images").glob("*.png"))).convert("RGB")).astype(int)
    ref = StableDiffusion3Pipeline.from_pretrained(str(folders["sd3"]))
    ref.set_progress_bar_config(disable=True)
    img = ref("a photo of a dog", num_inference_steps=3, guidance_scale=4.0, height=H, width=W,
              generator=torch.Generator().manual_seed(6), output_type="np").images[0]
    theirs = (img * 255).round().astype(int)
    assert np.abs(ours - theirs).max() <= 1


@pytest.mark.parametrize("fam", ["sd3", "flux-dev"])
def test_boost_skip_identity_on_flows(pipes, fam):
    """boost-skip with γ = 1, Δt = 0 is the Euler base sampler; with Δt it starts Δt steps into the flow grid."""
    kw = dict(num_inference_steps=4, guidance_scale=3.0, height=H, width=W, seeds=[0], output_type="latent")
    base = pipes[fam]("a dog", method="ddim", **kw)
    same = pipes[fam]("a dog", method="boost-skip", gamma=1.0, skip=0, **kw)
    assert torch.equal(base.latents, same.latents)
    skipped = pipes[fam]("a dog", method="boost-skip", gamma=2.0, skip=1, **kw)
    assert skipped.settings["unet_calls"] == 3 and torch.isfinite(skipped.latents).all()
