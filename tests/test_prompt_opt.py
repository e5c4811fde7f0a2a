"""MinorityPrompt: placeholder plumbing, objectives (finite differences), invariants and outputs."""

from __future__ import annotations

import logging

import pytest
import torch

from minority import MinorityError, MinorityPipeline, MinorityPromptPipeline
from minority.core.context import RunContext
from minority.core.rng import make_generators, randn_per_sample
from minority.core.sampling import Hook, sample
from minority.core.schedules import timestep_pairs
from minority.core.text import TokenOverride
from minority.core.tokens import insert_placeholders
from minority.methods.minority_prompt import (
    DiversityObjective,
    MinorityObjective,
    MinorityPrompt,
    ObjectiveInputs,
    PromptOptimizer,
)


def _optimizer(pipe, prompts, seeds, groups, cond, uncond, objective, v, steps, **hp):
    """A PromptOptimizer at every step (opt_every=1) over a batch with given conditioning and initial token."""
    run = RunContext(family="sd", latent=True, prompts=prompts, seeds=seeds, group_ids=groups, steps=steps,
                     guidance=1.0, pairs=(), prompt_encoder=pipe.prompt_encoder, cond=cond, uncond=uncond,
                     generators=make_generators(seeds))
    return PromptOptimizer(MinorityPrompt(opt_every=1, **hp).resolved("sd"), run, objective, [v])


def _cool(tok):
    return tok("cool", add_special_tokens=False).input_ids[0]


def test_insert_placeholders_matches_tokenizer_with_word(tiny_sd):
    tok = tiny_sd.prompt_encoder.tokenizers[0]
    ids = insert_placeholders(tok, ["a red sneaker"], 1, "end", marker=_cool(tok))
    ref = tok(["a red sneaker cool"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.equal(ids, ref)
    ids = insert_placeholders(tok, ["a red sneaker"], 1, "start", marker=_cool(tok))
    ref = tok(["cool a red sneaker"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.equal(ids, ref)


def test_placeholder_cut_off_error(tiny_sd):
    tok = tiny_sd.prompt_encoder.tokenizers[0]
    with pytest.raises(MinorityError, match="remove 1 token"):
        insert_placeholders(tok, ["word " * 75], 1, "end", marker=50000)


def test_causal_mask_keeps_prompt_positions(tiny_sd):
    enc = tiny_sd.prompt_encoder
    tok = enc.tokenizers[0]
    prompts = ["a photo of a dress"]
    ids = insert_placeholders(tok, prompts, 2, "end", marker=60000)
    v = torch.randn(1, 2, 32)
    with torch.no_grad():
        cv = enc.encode_ids([ids], [TokenOverride(torch.tensor([[60000, 60001]]), v)]).embeds
        c = enc.encode(prompts).embeds
    n = len(tok(prompts[0]).input_ids) - 1  # bos + prompt tokens
    assert torch.allclose(cv[:, :n], c[:, :n], atol=1e-6)
    assert not torch.allclose(cv[:, n : n + 3], c[:, n : n + 3], atol=1e-3)


def test_sdxl_pooled_at_end_of_text_even_with_legacy_eos_config(tiny_sdxl_dir):
    """Legacy CLIP configs (eos_token_id=2) make transformers pool at the largest id = the placeholder."""
    from transformers import CLIPTextModelWithProjection

    pipe = MinorityPipeline.from_pretrained(str(tiny_sdxl_dir))
    enc = pipe.prompt_encoder
    legacy = CLIPTextModelWithProjection.from_pretrained(str(tiny_sdxl_dir), subfolder="text_encoder_2", eos_token_id=2)
    legacy.requires_grad_(False)
    enc.text_encoders[1] = legacy
    tok = enc.tokenizers[1]
    marker = len(tok)  # one past the vocabulary: the largest id of the row
    ids2 = insert_placeholders(tok, ["a bag"], 1, "end", marker=marker)
    ids1 = insert_placeholders(enc.tokenizers[0], ["a bag"], 1, "end", marker=marker)
    v1, v2 = torch.randn(1, 1, 32), torch.randn(1, 1, 32)
    m = torch.tensor([[marker]])
    with torch.no_grad():
        c = enc.encode_ids([ids1, ids2], [TokenOverride(m, v1), TokenOverride(m, v2)])
        eos = int((ids2[0] == tok.eos_token_id).nonzero()[0])
        assert eos == 4  # bos, a, bag, S, eos
        from minority.core.text import _spliced_embeddings

        with _spliced_embeddings(legacy, TokenOverride(m, v2)):
            out = legacy(ids2, output_hidden_states=True)
        expected = legacy.text_projection(out.last_hidden_state[0, eos])
        wrong = out.text_embeds[0]  # transformers' pooled: at argmax id = the placeholder (position 3)
    assert torch.allclose(c.pooled[0], expected, atol=1e-6)
    assert not torch.allclose(c.pooled[0], wrong, atol=1e-3)


def test_only_placeholder_changes_and_no_weight_grads(tiny_sd):
    before = {n: p.detach().clone() for m in tiny_sd.components.modules() for n, p in m.named_parameters()}
    out = tiny_sd(["a sneaker", "a coat"], method="minority-prompt", num_inference_steps=6, seeds=[0, 1],
                  output_type="latent", opt_every=2)
    after = {n: p for m in tiny_sd.components.modules() for n, p in m.named_parameters()}
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert all(p.grad is None for p in after.values())
    tok = tiny_sd.prompt_encoder.tokenizers[0]
    cool = tiny_sd.prompt_encoder.text_encoders[0].get_input_embeddings().weight[_cool(tok)]
    v = out.extras[0]["token_embeds"]["<minority-0>"]
    assert v.shape == (1, 32) and not torch.allclose(v[0], cool)  # the token moved
    assert len(out.trajectories[0]["J"]) == 3 and len(out.trajectories[0]["J"][0]) == 3  # steps 0, 2, 4 × K


class _Reference(Hook):
    """DDIM on `prompt cool` at optimised steps and the plain prompt between (what opt_steps=0 must equal)."""

    def __init__(self, enc, prompts, every):
        self.with_word = enc.encode([p + " cool" for p in prompts])
        self.every = every

    def before_step(self, ctx):
        if ctx.index % self.every == 0:
            ctx.cond = self.with_word


def test_opt_steps_zero_is_ddim_with_initial_token(tiny_sd):
    prompts = ["a sneaker", "a bag"]
    out = tiny_sd(prompts, method="minority-prompt", opt_steps=0, num_inference_steps=7, seeds=[4, 5],
                  guidance_scale=4.0, output_type="latent", opt_every=3)
    pipe = tiny_sd
    cond = pipe.prompt_encoder.encode(prompts)
    uncond = pipe.prompt_encoder.encode(["", ""])
    gens = make_generators([4, 5])
    z = randn_per_sample(gens, (4, 8, 8))
    ref, _ = sample(pipe.denoiser, z, cond, uncond, timestep_pairs(pipe.components.scheduler, 7), 4.0, gens,
                    hooks=[_Reference(pipe.prompt_encoder, prompts, 3)])
    assert torch.allclose(out.latents, ref, atol=1e-5), (out.latents - ref).abs().max()
    plain = tiny_sd(prompts, method="ddim", num_inference_steps=7, seeds=[4, 5], guidance_scale=4.0, output_type="latent")
    assert not torch.allclose(out.latents, plain.latents, atol=1e-4)


@pytest.fixture(scope="module")
def pipe64(tiny_sd_dir):
    return MinorityPipeline.from_pretrained(str(tiny_sd_dir), torch_dtype=torch.float64)


def _inputs(pipe, prompts, v, guidance=3.0, t=601, s=400):
    enc = pipe.prompt_encoder
    cond, uncond = enc.encode(prompts), enc.encode([""] * len(prompts))
    opt = _optimizer(pipe, prompts, [0, 1], [0, 0], cond, uncond, MinorityObjective(), v, steps=10, opt_steps=1)
    z = randn_per_sample(make_generators([7, 8]), (4, 8, 8)).double()

    def make(vv):
        return ObjectiveInputs(pipe.denoiser, z, t, s, opt.encode_v([vv]), cond, uncond, guidance,
                               make_generators([1, 2]), [0, 0])

    return make


@pytest.mark.parametrize("switches", [{}, {"tweedie_cfg": True}, {"stop_grad_second": True}, {"cv_in_second": True},
                                      {"tweedie_cfg": True, "stop_grad_second": True, "cv_in_second": True}])
def test_objective_gradient_matches_finite_differences(pipe64, switches):
    """∇_v of J̃ (with its stop-gradients) equals central differences of the same expression with the
    stop-gradient branches frozen at v0 (float64)."""
    torch.manual_seed(0)
    prompts = ["a sneaker", "a dress"]
    v0 = pipe64.prompt_encoder.text_encoders[0].get_input_embeddings().weight[[1000, 2000]].clone()[:, None, :].double()
    make = _inputs(pipe64, prompts, v0)
    lam = 0.7
    obj = MinorityObjective(sg_lambda=lam, **switches)
    cfg = switches.get("tweedie_cfg", False)

    def parts(vv):
        o = make(vv)
        x1 = o.first_x0(cfg=cfg)
        a = pipe64.denoiser.alpha(o.s)
        n = randn_per_sample(o.generators, x1.shape[1:]).double()
        zs = a**0.5 * x1 + (1 - a) ** 0.5 * n
        x2 = o.x0(zs, o.s, o.cond_v if switches.get("cv_in_second") else o.cond, cfg=cfg)
        return x1, x2

    with torch.no_grad():
        x1_0, x2_0 = parts(v0)

    def f(vv):
        x1, x2 = parts(vv)
        val = (x1 - x2_0).pow(2).flatten(1).sum(1)
        if not switches.get("stop_grad_second"):
            val = val + lam * (x1_0 - x2).pow(2).flatten(1).sum(1)
        return val.sum()

    v = v0.clone().requires_grad_(True)
    J = obj(make(v))
    J.sum().backward()
    d = torch.randn_like(v0)
    h = 1e-5
    with torch.no_grad():
        fd = (f(v0 + h * d) - f(v0 - h * d)) / (2 * h)
        # the objective's value equals f at v0
        assert torch.allclose(J.sum(), f(v0), rtol=1e-10)
    ad = (v.grad * d).sum()
    assert torch.allclose(ad, fd, rtol=1e-5, atol=1e-8), (float(ad), float(fd))


def test_diversity_objective_matches_pairwise_sum(pipe64):
    prompts = ["a sneaker", "a dress"]
    v0 = torch.randn(2, 1, 32, dtype=torch.float64) * 0.02
    make = _inputs(pipe64, prompts, v0)
    o = make(v0)
    o.group_ids = [0, 0]
    with torch.no_grad():
        J = DiversityObjective()(o)
        x = o.first_x0().flatten(1)
    assert torch.allclose(J, torch.stack([(x[0] - x[1]).pow(2).sum()] * 2))
    o2 = make(v0)
    o2.group_ids = [0, 1]  # different prompts: no coupling
    with torch.no_grad():
        assert torch.equal(DiversityObjective()(o2), torch.zeros(2, dtype=torch.float64))


class _FixedNoise:
    """Wrap an objective so that each evaluation re-draws the same ε (deterministic ascent check)."""

    def __init__(self, inner, seeds):
        self.inner, self.seeds = inner, seeds

    def __call__(self, o):
        o.generators = make_generators(self.seeds)
        return self.inner(o)


def test_J_increases_over_iterations(tiny_sd):
    pipe = tiny_sd
    prompts = ["a sneaker", "a dress", "a bag", "a shirt"]
    enc = pipe.prompt_encoder
    cond, uncond = enc.encode(prompts), None
    emb = enc.text_encoders[0].get_input_embeddings().weight
    v = emb[[_cool(enc.tokenizers[0])] * 4][:, None, :].clone()
    hook = _optimizer(pipe, prompts, [0, 1, 2, 3], [0, 1, 2, 3], cond, uncond,
                      _FixedNoise(MinorityObjective(), [0, 1, 2, 3]), v, steps=10, opt_steps=6, lr=2e-3)
    z = randn_per_sample(make_generators([0, 1, 2, 3]), (4, 8, 8))
    pairs = timestep_pairs(pipe.components.scheduler, 10)
    _, records = sample(pipe.denoiser, z, cond, None, pairs[:3], 1.0, make_generators([0, 1, 2, 3]), hooks=[hook])
    gains = [traj[-1] - traj[0] for rec in records for traj in rec["J"]]
    assert sum(g > 0 for g in gains) >= 0.75 * len(gains), gains
    assert sum(gains) > 0


def test_non_finite_objective_stops_that_image_only(tiny_sd, caplog):
    caplog.set_level(logging.WARNING, logger="minority")

    class Bad:
        def __call__(self, o):
            J = MinorityObjective()(o)
            return J * torch.tensor([float("nan"), 1.0])  # NaN for image 0 only (per-sample graphs)

    pipe = tiny_sd
    prompts = ["a sneaker", "a dress"]
    enc = pipe.prompt_encoder
    cond = enc.encode(prompts)
    emb = enc.text_encoders[0].get_input_embeddings().weight
    v = emb[[_cool(enc.tokenizers[0])] * 2][:, None, :].clone()
    hook = _optimizer(pipe, prompts, [10, 11], [0, 1], cond, None, Bad(), v, steps=4, opt_steps=2, lr=0.05)
    z = randn_per_sample(make_generators([10, 11]), (4, 8, 8))
    out, _ = sample(pipe.denoiser, z, cond, None, timestep_pairs(pipe.components.scheduler, 4), 1.0,
                    make_generators([10, 11]), hooks=[hook])
    assert torch.isfinite(out).all()
    assert torch.equal(hook.v[0][0], v[0])  # image 0 kept its last finite token (the initial one)
    assert not torch.allclose(hook.v[0][1], v[1])  # image 1 optimised normally
    assert any("seed 10" in r.getMessage() and "Non-finite" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("method", ["minority-prompt", "diverse-prompt"])
def test_batch_size_invariance(tiny_sd, method):
    kw = dict(method=method, num_inference_steps=5, output_type="latent", opt_every=2, guidance_scale=3.0)
    prompts = ["a sneaker"] * 2 + ["a bag"] * 2
    full = tiny_sd(prompts, seeds=[0, 1, 2, 3], **kw).latents
    halves = torch.cat([tiny_sd(prompts[:2], seeds=[0, 1], **kw).latents, tiny_sd(prompts[2:], seeds=[2, 3], **kw).latents])
    assert torch.allclose(full, halves, atol=1e-4), (full - halves).abs().max()


def test_saved_token_loads_with_textual_inversion(tiny_sd_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    from minority.runs.generate import save_token_embeds

    pipe = MinorityPromptPipeline.from_pretrained(str(tiny_sd_dir))
    out = pipe(["a sneaker"], num_inference_steps=4, seeds=[3], output_type="latent", opt_every=1)
    extra = out.extras[0]
    save_token_embeds(extra, tmp_path / "tok.safetensors")
    ref = StableDiffusionPipeline.from_pretrained(str(tiny_sd_dir))
    ref.load_textual_inversion(str(tmp_path / "tok.safetensors"))
    name = extra["placeholder"]
    assert name == "<minority-3>"
    emb, _ = ref.encode_prompt(f"a sneaker {name}", "cpu", 1, False)
    enc = pipe.prompt_encoder
    tok = enc.tokenizers[0]
    ids = insert_placeholders(tok, ["a sneaker"], 1, "end", marker=99999)
    with torch.no_grad():
        ours = enc.encode_ids([ids], [TokenOverride(torch.tensor([[99999]]), extra["token_embeds"][name][None])]).embeds
    assert torch.allclose(emb, ours, atol=1e-5)


BAD = [
    ({"opt_steps": -1}, "opt_steps must be >= 0"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"perturb": 1.5}, "perturb must be"),
    ({"perturb": "sometimes"}, "perturb must be"),
    ({"init_word": "sneakers on fire"}, "not a single token"),
    ({"placeholder": "cat"}, "already exists in the vocabulary"),
    ({"opt_every": 0}, "opt_every must be >= 1"),
    ({"token_position": "middle"}, "token_position must be one of"),
]


@pytest.mark.parametrize("params,message", BAD)
def test_bad_hyperparameters(tiny_sd, params, message):
    with pytest.raises(MinorityError, match=message):
        tiny_sd("a bag", method="minority-prompt", num_inference_steps=2, **params)


def test_diverse_prompt_needs_two_images(tiny_sd):
    with pytest.raises(MinorityError, match="at least 2 images per prompt"):
        tiny_sd(["a bag", "a coat"], method="diverse-prompt", num_inference_steps=2)


def test_init_word_error_lists_tokens(tiny_sd):
    with pytest.raises(MinorityError, match=r"\['sneakers</w>', 'on</w>', 'fire</w>'\]"):
        tiny_sd("a bag", method="minority-prompt", num_inference_steps=2, init_word="sneakers on fire")


def test_sdxl_minority_prompt_runs_and_saves_both_keys(tiny_sdxl):
    out = tiny_sdxl(["a bag", "a coat"], method="minority-prompt", num_inference_steps=3, seeds=[0, 1],
                    output_type="latent", opt_every=1, guidance_scale=1.0)
    emb = out.extras[1]["token_embeds"]
    assert set(emb) == {"clip_l", "clip_g"} and emb["clip_g"].shape == (1, 32)
    assert torch.isfinite(out.latents).all()


def test_cfgpp_solver_with_minority_prompt(tiny_sd):
    out = tiny_sd("a dress", method="minority-prompt", solver="cfgpp", guidance_scale=0.6, num_inference_steps=3,
                  output_type="latent")
    assert torch.isfinite(out.latents).all()
    with pytest.raises(MinorityError, match=r"\[0, 1\]"):
        tiny_sd("a dress", method="minority-prompt", solver="cfgpp", guidance_scale=7.5, num_inference_steps=3)


def test_call_counts_match_floor(tiny_sd):
    out = tiny_sd(["a dress", "a bag"], method="minority-prompt", num_inference_steps=10, guidance_scale=3.0,
                  output_type="latent", opt_every=5, opt_steps=3)
    # sampling: 10 batched CFG calls; each of 2 optimised steps: 3 × (2 forwards)
    assert out.settings["unet_calls"] == 10 + 2 * 3 * 2

