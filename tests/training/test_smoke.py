"""Tiny end-to-end trainings (a few steps each) and offline loading of the exported folders."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from minority.errors import MinorityError
from minority.training import embedded_models, resolve_embedded
from minority.training.cli import add_train_arguments, run_train


def _train(name: str, out: Path, data_dir: Path, *extra: str) -> int:
    parser = add_train_arguments(argparse.ArgumentParser())
    args = parser.parse_args([name, "--tiny", "--out", str(out), "--data-dir", str(data_dir), "--device", "cpu",
                              "--export-dir", str(out / "export" / name), *extra])
    return run_train(args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fake_data_dir) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for name in ("fashion-classifier", "fashion-ddpm", "fashion-sd", "fashion-flow"):
        assert _train(name, root / name, fake_data_dir) == 0
    return root


def _export(trained: Path, name: str) -> Path:
    return trained / name / "export" / name


def test_run_folder_contents(trained):
    for name in ("fashion-classifier", "fashion-ddpm", "fashion-sd", "fashion-flow"):
        run = trained / name
        for f in ("config.json", "train.log", "loss.png", "checkpoint/weights.safetensors", "checkpoint/state.json"):
            assert (run / f).is_file(), f"{name}: {f}"
        prov = json.loads((_export(trained, name) / "provenance.json").read_text())
        assert prov["command"].startswith(f"minority train {name}") and prov["seed"] == 0
        assert prov["wall_time_s"] >= 0 and prov["steps"] and "files" in prov["data"]


def test_sd_folder_loads_like_sd15(trained):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    folder = _export(trained, "fashion-sd")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    assert index["minority_defaults"] == {"guidance": 3.0}  # the sampling default the model was evaluated at
    pipe = StableDiffusionPipeline.from_pretrained(str(folder))
    assert isinstance(pipe.scheduler, DDIMScheduler)
    cfg = pipe.scheduler.config
    assert (cfg.beta_schedule, cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps) == ("scaled_linear", 0.00085, 0.012, 1000)
    assert (cfg.steps_offset, cfg.set_alpha_to_one, cfg.clip_sample, cfg.prediction_type) == (1, False, False, "epsilon")
    assert pipe.text_encoder.config.vocab_size == len(pipe.tokenizer) == 49408
    assert pipe.text_encoder.config.eos_token_id == 49407
    assert pipe.text_encoder.dtype == pipe.unet.dtype == pipe.vae.dtype == torch.float32
    assert pipe.vae_scale_factor == 4 and pipe.vae.config.scaling_factor != 1.0
    gen = torch.Generator("cpu").manual_seed(0)
    out = pipe(["a photo of a sneaker"], num_inference_steps=2, guidance_scale=2.0, generator=gen, output_type="pt")
    assert out.images.shape == (1, 3, 32, 32)


def test_ddpm_folder_loads(trained):
    from diffusers import DDPMScheduler, UNet2DModel

    folder = _export(trained, "fashion-ddpm")
    unet = UNet2DModel.from_pretrained(str(folder), subfolder="unet")
    sched = DDPMScheduler.from_pretrained(str(folder), subfolder="scheduler")
    assert unet.dtype == torch.float32
    assert unet.config.num_class_embeds == 11 and unet.config.in_channels == 1 and unet.config.out_channels == 2
    assert sched.config.num_train_timesteps == 1000 and sched.config.variance_type == "learned_range"
    x = torch.randn(2, 1, 32, 32)
    y = unet(x, torch.tensor([5, 900]), class_labels=torch.tensor([3, 10])).sample
    assert y.shape == (2, 2, 32, 32)
    from minority.pipelines.pixel import PixelPipeline  # what the training's quality check samples with

    pipe = PixelPipeline.from_pretrained(str(folder))
    a = pipe(class_labels=[3, None], num_inference_steps=3, guidance_scale=2.0, seeds=[0, 1], output_type="pt").images
    b = pipe(class_labels=[3], num_inference_steps=3, guidance_scale=2.0, seeds=[0], output_type="pt").images
    assert a.shape == (2, 1, 32, 32)
    torch.testing.assert_close(a[:1], b, rtol=1e-4, atol=1e-4)


def test_classifier_api(trained):
    from minority.nets.fashion_classifier import load_classifier

    clf = load_classifier(_export(trained, "fashion-classifier"))
    gray, rgb = torch.rand(3, 1, 32, 32) * 2 - 1, torch.rand(3, 3, 64, 64) * 2 - 1
    assert clf(gray).shape == (3, 10) and clf(rgb).shape == (3, 10)
    assert clf.features(gray).shape == (3, clf.config.feature_dim)
    with pytest.raises(MinorityError):
        clf(torch.zeros(2, 2, 32, 32))


def test_registry(trained, tmp_path):
    import shutil

    for name in ("fashion-classifier", "fashion-ddpm", "fashion-sd", "fashion-flow"):
        shutil.copytree(_export(trained, name), tmp_path / name)
    (tmp_path / "not-a-model").mkdir()
    models = embedded_models(tmp_path)
    assert [(m.name, m.kind) for m in models] == [
        ("fashion-classifier", "classifier"), ("fashion-ddpm", "ddpm"), ("fashion-flow", "flow"), ("fashion-sd", "sd")]
    assert all(m.size_bytes > 0 and m.provenance["name"] == m.name for m in models)
    assert resolve_embedded("fashion-sd", tmp_path) == tmp_path / "fashion-sd"
    assert resolve_embedded("nope", tmp_path) is None


def test_cli_resume_rules(trained, fake_data_dir, tmp_path):
    # a finished run resumes as a no-op and re-exports; a fresh folder refuses --resume
    assert _train("fashion-classifier", trained / "fashion-classifier", fake_data_dir, "--resume") == 0
    with pytest.raises(MinorityError, match="--resume"):
        _train("fashion-classifier", tmp_path / "fresh", fake_data_dir, "--resume")
    with pytest.raises(MinorityError, match="does not apply"):
        _train("fashion-ddpm", tmp_path / "x", fake_data_dir, "--vae-steps", "3")


def test_shipped_models_if_present():
    """The package's own models (when shipped) are complete and small enough."""
    models = embedded_models()
    assert sum(m.size_bytes for m in models) <= 80 * 2**20
    for m in models:
        assert m.provenance.get("metrics"), m.name
        if m.name == "fashion-classifier":
            assert m.provenance["metrics"]["test_accuracy"] >= 0.90


def test_max_minutes_stops_and_resumes(fake_data_dir, tmp_path):
    out = tmp_path / "clf"
    assert _train("fashion-classifier", out, fake_data_dir, "--max-minutes", "0") == 3
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["steps"]["classifier"] == 1
    assert _train("fashion-classifier", out, fake_data_dir, "--resume") == 0
    assert json.loads((out / "checkpoint" / "state.json").read_text())["steps"]["classifier"] == 4
    with pytest.raises(MinorityError, match="--lr cannot change"):
        _train("fashion-classifier", out, fake_data_dir, "--resume", "--lr", "0.5")


def test_export_only_snapshot(fake_data_dir, tmp_path):
    out = tmp_path / "ddpm"
    assert _train("fashion-ddpm", out, fake_data_dir, "--max-minutes", "0") == 3
    assert _train("fashion-ddpm", out, fake_data_dir, "--resume", "--export-only") == 0
    prov = json.loads((out / "export" / "fashion-ddpm" / "provenance.json").read_text())
    assert prov["steps"] == {"unet": 1}
    with pytest.raises(MinorityError, match="--resume"):
        _train("fashion-ddpm", tmp_path / "other", fake_data_dir, "--export-only")


def test_exports_load_with_the_generic_loader(trained):
    """The exported folders load through minority's own loader (the same path as SD 1.5 / hub DDPMs)."""
    import numpy as np

    from minority import MinorityPipeline, PixelPipeline

    sd = MinorityPipeline.from_pretrained(str(_export(trained, "fashion-sd")))
    img = sd("a photo of a sneaker", num_inference_steps=2, output_type="np").images
    assert img.shape == (1, 32, 32, 3) and np.isfinite(img).all()
    px = PixelPipeline.from_pretrained(str(_export(trained, "fashion-ddpm")))
    assert px.components.null_class_label == 10
    assert sd.components.defaults["guidance"] == 3.0 and px.components.defaults["guidance"] == 1.0
    out = px(class_labels=[3, None], num_inference_steps=2, guidance_scale=2.0, output_type="np").images
    assert out.shape == (2, 32, 32, 1) and np.isfinite(out).all()


def test_flow_folder_is_a_standard_sd3_folder(trained):
    """fashion-flow loads in diffusers' own StableDiffusion3Pipeline (no T5, ``max_sequence_length=0`` as declared)
    and minority's Euler sampler reproduces it; the training conditioning is the sampler's."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    from minority import MinorityPipeline
    from minority.training.flow_models import projected_text_encoder
    from minority.training.train_flow import CaptionConditioning

    folder = _export(trained, "fashion-flow")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert index["text_encoder_3"] == [None, None] and index["tokenizer_3"] == [None, None]
    assert index["minority_defaults"] == {"guidance": 3.0, "max_sequence_length": 0}
    ref = StableDiffusion3Pipeline.from_pretrained(str(folder), text_encoder_3=None, tokenizer_3=None)
    ref.set_progress_bar_config(disable=True)
    assert isinstance(ref.scheduler, FlowMatchEulerDiscreteScheduler) and ref.scheduler.config.shift == 1.0
    assert ref.tokenizer.model_max_length == ref.tokenizer_2.model_max_length == 32
    assert ref.transformer.dtype == ref.vae.dtype == ref.text_encoder.dtype == torch.float32
    assert ref.vae.config.shift_factor is not None and ref.vae.config.scaling_factor != 1.0
    prompt = "a photo of a sneaker"
    want = ref(prompt, num_inference_steps=3, guidance_scale=2.0, max_sequence_length=0, output_type="latent",
               generator=torch.Generator().manual_seed(5)).images
    pipe = MinorityPipeline.from_pretrained(str(folder))
    out = pipe(prompt, method="euler", num_inference_steps=3, guidance_scale=2.0, seeds=[5], output_type="latent")
    torch.testing.assert_close(out.latents, want, rtol=0, atol=1e-5)
    # what the transformer was trained on = what sampling feeds it (same tokenizer length, layers, pooling)
    comps = pipe.components
    enc = comps.prompt_encoder()
    cond = enc.encode_ids(enc.tokenize([prompt]))
    train_enc = type(enc)("sd3", comps.tokenizers, [projected_text_encoder(resolve_embedded("fashion-sd"))] * 2,
                          max_sequence_length=0, joint_dim=256)
    embeds, pooled = CaptionConditioning(train_enc)([prompt])
    assert cond.embeds.shape == (1, 32, 256)
    torch.testing.assert_close(cond.embeds, embeds, rtol=0, atol=2e-3)  # fp16-stored vs fp32 weights
    torch.testing.assert_close(cond.pooled, pooled, rtol=0, atol=2e-3)


def test_init_from_starts_a_ddpm_run_from_an_exported_model(trained, fake_data_dir, tmp_path):
    """--init-from: a new fashion-ddpm run whose UNet starts as the given folder's (the shipped model's checkpoint is
    not shipped, so training it further starts here); wrong uses are one-line errors."""
    from minority.training.train_ddpm import build_ddpm_unet, load_init_weights, tiny_config

    src = _export(trained, "fashion-ddpm")
    unet = build_ddpm_unet(tiny_config())
    load_init_weights(unet, src)
    from diffusers import UNet2DModel

    ref = UNet2DModel.from_pretrained(str(src), subfolder="unet", torch_dtype=torch.float32).state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in unet.state_dict().items())
    out = tmp_path / "ft"
    assert _train("fashion-ddpm", out, fake_data_dir, "--init-from", str(src)) == 0
    assert json.loads((out / "config.json").read_text())["init_from"] == str(src)
    with pytest.raises(MinorityError, match="only one"):
        _train("fashion-ddpm", out, fake_data_dir, "--init-from", str(src), "--resume")
    with pytest.raises(MinorityError, match="does not apply"):
        _train("fashion-sd", tmp_path / "sd", fake_data_dir, "--init-from", str(src))
    with pytest.raises(MinorityError, match="no unet"):
        _train("fashion-ddpm", tmp_path / "bad", fake_data_dir, "--init-from", str(tmp_path))
