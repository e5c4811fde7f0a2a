"""MinorityPrompt's ``token_encoders`` on flow models (SPEC §3.5): the token in T5's input embeddings, its token file
loaded into plain diffusers pipelines, and the refusals."""

from __future__ import annotations

import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline
from safetensors.torch import load_file

from minority import MinorityPipeline
from minority.cli.main import main
from minority.errors import MinorityError
from minority.methods import minority_prompt
from minority.pipelines.tiny_flow import build_tiny_flow
from minority.runs.folder import save_token_embeds

H = W = 16
KW = dict(method="minority-prompt", num_inference_steps=2, height=H, width=W, seeds=[3], output_type="latent",
          opt_every=1, init="mean", lr=0.1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("flowtok")
    return {fam: build_tiny_flow(root / fam, fam) for fam in ("sd3", "flux-dev")}


@pytest.fixture(scope="module")
def pipes(folders):
    return {fam: MinorityPipeline.from_pretrained(str(f)) for fam, f in folders.items()}


def _run_capturing(pipe, monkeypatch, **kw):
    """Run minority-prompt; return (output, the PromptOptimizer hook) so its last C_{v*} can be compared."""
    seen = []
    init = minority_prompt.PromptOptimizer.__init__

    def spy(self, *a, **k):
        init(self, *a, **k)
        seen.append(self)

    monkeypatch.setattr(minority_prompt.PromptOptimizer, "__init__", spy)
    return pipe("a dog", **KW, **kw), seen[-1]


def _add_token(tok, te, name: str, vec: torch.Tensor) -> None:
    """What a user does with a textual-inversion vector: add the token, resize the table, set the row."""
    tok.add_tokens([name])
    te.resize_token_embeddings(len(tok))
    with torch.no_grad():
        te.get_input_embeddings().weight[tok.convert_tokens_to_ids(name)] = vec


def test_flux_token_file_round_trip_in_plain_diffusers(folders, pipes, tmp_path, monkeypatch):
    """--token-encoders both on FLUX: the saved clip_l / t5 token file, loaded into a plain FluxPipeline, gives the
    optimised conditioning C_{v*} (T5 sequence and CLIP pooled embeddings) the method sampled with."""
    out, hook = _run_capturing(pipes["flux-dev"], monkeypatch, guidance_scale=3.5, token_encoders="both")
    extra = out.extras[0]
    save_token_embeds(extra, tmp_path / "tok.safetensors")
    state = load_file(str(tmp_path / "tok.safetensors"))
    assert set(state) == {"clip_l", "t5"} and state["t5"].shape == (1, 64)
    ref = FluxPipeline.from_pretrained(str(folders["flux-dev"]))
    name = extra["placeholder"]
    _add_token(ref.tokenizer, ref.text_encoder, name, state["clip_l"][0])
    _add_token(ref.tokenizer_2, ref.text_encoder_2, name, state["t5"][0])
    with torch.no_grad():
        emb, pooled, _ = ref.encode_prompt(f"a dog {name}", None, max_sequence_length=512)
    assert torch.allclose(emb, hook.last_cond.embeds, atol=1e-5)
    assert torch.allclose(pooled, hook.last_cond.pooled, atol=1e-5)
    assert not torch.allclose(emb, pipes["flux-dev"].prompt_encoder.encode(["a dog"]).embeds, atol=1e-4)


def test_sd3_t5_token_file_round_trip_in_plain_diffusers(folders, pipes, tmp_path, monkeypatch):
    """--token-encoders t5 on SD3: the file carries only ``t5``; CLIP-L/G get the plain prompt (prompt, prompt_2)
    and T5 the token (prompt_3) in a plain StableDiffusion3Pipeline."""
    out, hook = _run_capturing(pipes["sd3"], monkeypatch, guidance_scale=3.0, token_encoders="t5")
    save_token_embeds(out.extras[0], tmp_path / "tok.safetensors")
    state = load_file(str(tmp_path / "tok.safetensors"))
    assert set(state) == {"t5"}
    ref = StableDiffusion3Pipeline.from_pretrained(str(folders["sd3"]))
    name = out.extras[0]["placeholder"]
    _add_token(ref.tokenizer_3, ref.text_encoder_3, name, state["t5"][0])
    with torch.no_grad():
        emb, _, pooled, _ = ref.encode_prompt("a dog", "a dog", f"a dog {name}", do_classifier_free_guidance=False)
    assert torch.allclose(emb, hook.last_cond.embeds, atol=1e-5)
    assert torch.allclose(pooled, hook.last_cond.pooled, atol=1e-5)


def test_t5_gradient_only_into_t5_token(pipes, monkeypatch):
    """With t5, v is one T5 row: ∂C_v/∂v is non-zero, the CLIP part of C_v (sequence rows and pooled) is the plain
    prompt's, the CLIP tables are untouched, and the token changes the sampled latents."""
    pipe = pipes["sd3"]
    enc = pipe.prompt_encoder
    tables = [te.get_input_embeddings().weight.detach().clone() for te in enc.text_encoders]
    out, hook = _run_capturing(pipe, monkeypatch, guidance_scale=3.0, token_encoders="t5")
    assert len(hook.v) == 1 and hook.v[0].shape[-1] == enc.t5_encoder.config.d_model
    v = hook.v[0].clone().requires_grad_(True)
    c = hook.encode_v([v])
    plain = enc.encode(["a dog"])
    L = enc.tokenizers[0].model_max_length
    assert torch.equal(c.embeds[:, :L].detach(), plain.embeds[:, :L]) and torch.equal(c.pooled.detach(), plain.pooled)
    assert not torch.allclose(c.embeds[:, L:].detach(), plain.embeds[:, L:], atol=1e-4)
    c.embeds.pow(2).sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0
    assert all(torch.equal(t, te.get_input_embeddings().weight) for t, te in zip(tables, enc.text_encoders))
    init = enc.t5_encoder.get_input_embeddings().weight.detach().mean(0)
    assert not torch.allclose(hook.v[0][0, 0], init)  # optimised
    base = pipe("a dog", method="ddim", num_inference_steps=2, guidance_scale=3.0, height=H, width=W, seeds=[3],
                output_type="latent")
    assert not torch.allclose(out.latents, base.latents, atol=1e-4)


def test_clip_is_the_default(pipes, monkeypatch):
    """--token-encoders clip (default) = no T5 token: same latents as not passing it."""
    a = pipes["flux-dev"]("a dog", **KW, guidance_scale=3.5)
    b = pipes["flux-dev"]("a dog", **KW, guidance_scale=3.5, token_encoders="clip")
    assert torch.equal(a.latents, b.latents) and set(a.extras[0]["token_embeds"]) == {"clip_l"}


def test_token_encoders_refused(tmp_path, tiny_sd, capsys):
    with pytest.raises(MinorityError, match="applies to SD3 / FLUX"):
        tiny_sd("a dog", method="minority-prompt", num_inference_steps=2, token_encoders="t5")
    folder = build_tiny_flow(tmp_path / "sd3", "sd3", with_t5=False)
    code = main(["generate", "a dog", "--model", str(folder), "--method", "minority-prompt", "--token-encoders",
                 "both", "--steps", "2", "--height", "16", "--width", "16", "--out", str(tmp_path / "o")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if "T5" in ln]  # (loading progress bars aside)
    assert code != 0 and len(err) == 1 and "loaded without T5" in err[0] and "text_encoder_3" in err[0]
    assert not (tmp_path / "o" / "images").exists()
