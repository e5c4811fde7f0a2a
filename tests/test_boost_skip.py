"""Boost-and-Skip (SPEC §3.6): the base sampler exactly at γ = 1, Δt = 0; equal to diffusers' schedulers started
from γ z_T at grid index Δt; S − Δt network calls; per-seed batch invariance; bad values refused."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from minority import MinorityError, PixelPipeline
from minority.core.rng import make_generators
from minority.methods import BoostSkip, get_method


def _pixel_folder(path, learned: bool):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(2)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=2 if learned else 1, layers_per_block=1,
                       block_out_channels=(32, 32), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=32)
    sch = DDPMScheduler(num_train_timesteps=1000, variance_type="learned_range" if learned else "fixed_small")
    DDPMPipeline(unet, sch).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def fixed_dir(tmp_path_factory):
    return _pixel_folder(tmp_path_factory.mktemp("bns") / "fixed", learned=False)


@pytest.fixture(scope="module")
def learned_dir(tmp_path_factory):
    return _pixel_folder(tmp_path_factory.mktemp("bns") / "learned", learned=True)


KW = dict(num_images=2, seeds=[3, 4], num_inference_steps=8, output_type="latent")


@pytest.mark.parametrize("solver", ["ancestral", "ddim"])
def test_gamma_one_skip_zero_is_the_base_sampler_bitwise(learned_dir, solver):
    pipe = PixelPipeline.from_pretrained(str(learned_dir))
    base = pipe(method=solver, **KW)
    same = pipe(method="boost-skip", gamma=1.0, skip=0, solver=solver, **KW)
    assert torch.equal(base.latents, same.latents)
    assert same.settings["unet_calls"] == base.settings["unet_calls"] == 8


def test_gamma_one_skip_zero_is_ddim_on_text_to_image(tiny_sd):
    kw = dict(num_inference_steps=5, guidance_scale=3.0, seeds=[0, 1], output_type="latent")
    base = tiny_sd(["a bag", "a coat"], method="ddim", **kw)
    same = tiny_sd(["a bag", "a coat"], method="boost-skip", gamma=1.0, skip=0, **kw)
    assert torch.equal(base.latents, same.latents)


def test_ancestral_equals_ddpm_scheduler_from_boosted_noise_at_index_skip(learned_dir):
    """diffusers' DDPMScheduler with the same per-image generators, started from γ·randn at timesteps[Δt]."""
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.utils.torch_utils import randn_tensor

    unet = UNet2DModel.from_pretrained(str(learned_dir), subfolder="unet").eval()
    sched = DDPMScheduler.from_pretrained(str(learned_dir), subfolder="scheduler")
    sched.set_timesteps(8)
    gens = make_generators([3, 4])
    x = 2.5 * randn_tensor((2, 1, 8, 8), generator=gens)
    with torch.no_grad():
        for t in sched.timesteps[3:]:
            x = sched.step(unet(x, t).sample, t, x, generator=gens).prev_sample
    out = PixelPipeline.from_pretrained(str(learned_dir))(method="boost-skip", gamma=2.5, skip=3, **KW)
    assert torch.allclose(out.latents, x, atol=1e-4)
    assert out.settings["unet_calls"] == 8 - 3


def test_ddim_equals_ddim_scheduler_from_boosted_noise_at_index_skip(fixed_dir):
    from diffusers import DDIMScheduler, UNet2DModel
    from diffusers.utils.torch_utils import randn_tensor

    unet = UNet2DModel.from_pretrained(str(fixed_dir), subfolder="unet").eval()
    sched = DDIMScheduler.from_pretrained(str(fixed_dir), subfolder="scheduler")
    sched.set_timesteps(8)
    x = 4.0 * randn_tensor((2, 1, 8, 8), generator=make_generators([3, 4]))
    with torch.no_grad():
        for t in sched.timesteps[2:]:
            x = sched.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
    out = PixelPipeline.from_pretrained(str(fixed_dir))(method="boost-skip", gamma=4.0, skip=2, solver="ddim", **KW)
    assert torch.allclose(out.latents, x, atol=1e-4)


@pytest.mark.parametrize("skip", [0, 1, 4, 7])
def test_skip_reduces_network_calls_to_steps_minus_skip(fixed_dir, tiny_sd, skip):
    out = PixelPipeline.from_pretrained(str(fixed_dir))(method="boost-skip", gamma=2.0, skip=skip, **KW)
    assert out.settings["unet_calls"] == 8 - skip and out.settings["unet_sample_evals"] == 2 * (8 - skip)
    sd = tiny_sd(["a bag"], method="boost-skip", skip=min(skip, 4), num_inference_steps=5, guidance_scale=3.0,
                 seeds=[0], output_type="latent")
    assert sd.settings["unet_calls"] == 5 - min(skip, 4)  # one batched CFG call per remaining step


def test_batch_size_invariance(learned_dir):
    pipe = PixelPipeline.from_pretrained(str(learned_dir))
    kw = dict(num_inference_steps=6, method="boost-skip", gamma=3.0, skip=2, output_type="latent")
    full = pipe(num_images=3, seeds=[0, 1, 2], **kw).latents
    parts = torch.cat([pipe(num_images=1, seeds=[s], **kw).latents for s in (0, 1, 2)])
    assert torch.allclose(full, parts, atol=1e-6)


def test_boost_changes_the_samples(fixed_dir):
    pipe = PixelPipeline.from_pretrained(str(fixed_dir))
    base = pipe(method="ancestral", **KW).latents
    assert not np.allclose(base.numpy(), pipe(method="boost-skip", gamma=2.0, skip=0, **KW).latents.numpy())


@pytest.mark.parametrize("params,message", [
    ({"gamma": 0.0}, r"gamma must be > 0 \(got 0"),
    ({"gamma": -1.0}, "gamma must be > 0"),
    ({"skip": 8}, r"skip=8 must be below the number of steps \(8\)"),
    ({"skip": 20}, "lower --skip"),
    ({"skip": -1}, "skip must be >= 0"),
])
def test_bad_values_are_refused_in_one_line(fixed_dir, params, message):
    with pytest.raises(MinorityError, match=message) as e:
        PixelPipeline.from_pretrained(str(fixed_dir))(method="boost-skip", **{**KW, **params})
    assert "\n" not in str(e.value)


def test_registered_with_presets():
    assert get_method("boost-skip") is BoostSkip
    assert BoostSkip.presets["celeba64"]["gamma"] == 4.0 and BoostSkip.presets["imagenet64"]["gamma"] == 2.5
    assert all(p["skip"] == 3 for p in BoostSkip.presets.values())
    with pytest.raises(MinorityError, match="DDIM"):
        BoostSkip(solver="ancestral").check(SimpleNamespace(latent=True, steps=10))


def _cfg(argv):
    from minority.cli.generate import config_from_args
    from minority.cli.main import build_parser

    return config_from_args(build_parser(argv).parse_args(argv))


def test_preset_fills_hyperparameters_and_run_settings_flags_win():
    """--preset: the authors' settings (BnS CelebA γ 4, Δt 3; 250 ancestral steps on the adm grid); flags win."""
    cfg = _cfg(["generate", "--method", "boost-skip", "--preset", "celeba64", "--model", "m"])
    assert (cfg.method.gamma, cfg.method.skip, cfg.method.solver) == (4.0, 3, "ancestral")
    assert (cfg.steps, cfg.spacing, cfg.preset) == (250, "adm", "celeba64")
    assert set(cfg.given_params) == {"gamma", "skip", "solver"}  # model defaults cannot override a preset
    cfg = _cfg(["generate", "--method", "boost-skip", "--preset", "imagenet64", "--gamma", "1.5", "--steps", "20",
                "--spacing", "scheduler", "--model", "m"])
    assert (cfg.method.gamma, cfg.method.skip, cfg.steps, cfg.spacing) == (1.5, 3, 20, "scheduler")
    cfg = _cfg(["generate", "--method", "sgms", "--preset", "imagenet64", "--model", "m"])
    assert (cfg.method.scale, cfg.method.guide_every, cfg.steps, cfg.spacing) == (0.2, 2, 250, "adm")
    assert _cfg(["generate", "--method", "ddim", "--model", "m"]).spacing == "scheduler"


def test_preset_errors_are_one_line(capsys, tmp_path):
    from minority.cli import main

    for argv, text in ((["--method", "boost-skip", "--preset", "lsun"], "has no preset 'lsun' (its presets: celeba64"),
                       (["--method", "ddim", "--preset", "celeba64"], "has no preset 'celeba64' (it has none)")):
        assert main(["generate", *argv, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and text in err[0]


def test_preset_run_on_a_pixel_model(fixed_dir, tmp_path):
    from minority.cli import main
    from minority.runs.io import read_jsonl

    out = tmp_path / "p"
    assert main(["generate", "--model", str(fixed_dir), "--method", "boost-skip", "--preset", "celeba64",
                 "--steps", "10", "--seeds", "0", "--out", str(out)]) == 0
    row = read_jsonl(out / "manifest.jsonl")[0]
    assert (row["gamma"], row["skip"], row["steps"]) == (4.0, 3, 10)
    import json
    assert json.loads((out / "config.json").read_text())["preset"] == "celeba64"
