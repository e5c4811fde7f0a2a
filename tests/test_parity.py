"""DDIM parity with diffusers' own pipelines for the same initial latent (SD eps, SD v-pred, SDXL, trailing)."""

from __future__ import annotations

import numpy as np
import pytest

from minority import MinorityPipeline
from minority.core.rng import make_generators, randn_per_sample

ATOL = 2e-5  # max abs difference on images in [0, 1] (float32)


def _diffusers_images(pipe, prompts, latents, steps, guidance, **kw):
    out = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, latents=latents.clone(), output_type="np", **kw)
    return out.images


@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_sd_ddim_matches_diffusers(tiny_sd_dir, guidance):
    from diffusers import StableDiffusionPipeline

    ref = StableDiffusionPipeline.from_pretrained(str(tiny_sd_dir))
    ref.set_progress_bar_config(disable=True)
    ours = MinorityPipeline.from_pipe(ref)
    prompts = ["a photo of a cat", "a red sneaker on a dark background"]
    lat = randn_per_sample(make_generators([3, 4]), (4, 8, 8))
    a = _diffusers_images(ref, prompts, lat, 6, guidance)
    b = ours(prompts, num_inference_steps=6, guidance_scale=guidance, latents=lat, output_type="np").images
    diff = np.abs(a - b).max()
    assert diff < ATOL, diff


def test_sd_v_prediction_matches_diffusers(tiny_sd_v_dir):
    from diffusers import StableDiffusionPipeline

    ref = StableDiffusionPipeline.from_pretrained(str(tiny_sd_v_dir))
    ref.set_progress_bar_config(disable=True)
    ours = MinorityPipeline.from_pretrained(str(tiny_sd_v_dir))
    assert ours.denoiser.prediction_type == "v_prediction"
    lat = randn_per_sample(make_generators([0]), (4, 8, 8))
    a = _diffusers_images(ref, ["a dress"], lat, 5, 4.0)
    b = ours("a dress", num_inference_steps=5, guidance_scale=4.0, latents=lat, output_type="np").images
    assert np.abs(a - b).max() < ATOL


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_sdxl_ddim_matches_diffusers(tiny_sdxl_dir, guidance):
    from diffusers import StableDiffusionXLPipeline

    ref = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_dir))
    ref.set_progress_bar_config(disable=True)
    ours = MinorityPipeline.from_pipe(ref)
    lat = randn_per_sample(make_generators([1, 2]), (4, 8, 8))
    a = _diffusers_images(ref, ["a bag", "a coat"], lat, 5, guidance, height=16, width=16)
    b = ours(["a bag", "a coat"], num_inference_steps=5, guidance_scale=guidance, latents=lat, output_type="np").images
    assert np.abs(a - b).max() < ATOL


def test_trailing_grid_matches_diffusers_ddim_and_euler(tiny_sdxl_dir):
    """Lightning-style trailing timesteps: [999, 749, 499, 249]; equals diffusers' DDIM exactly and Euler closely."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionXLPipeline

    ref = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_dir))
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = DDIMScheduler.from_config(ref.scheduler.config, timestep_spacing="trailing")
    ours = MinorityPipeline.from_pipe(ref)
    from minority.core.schedules import timestep_pairs

    assert timestep_pairs(ours.components.scheduler, 4) == [(999, 749), (749, 499), (499, 249), (249, -1)]
    lat = randn_per_sample(make_generators([9]), (4, 8, 8))
    a = _diffusers_images(ref, "a shirt", lat, 4, 1.0, height=16, width=16)
    b = ours("a shirt", num_inference_steps=4, guidance_scale=1.0, latents=lat, output_type="np").images
    assert np.abs(a - b).max() < ATOL
    # Euler on the trailing grid (final sigma 0) is the same discretisation of the PF-ODE as DDIM with a final
    # ᾱ of 1, so it matches our loop when the scheduler sets set_alpha_to_one:
    ours.components.scheduler = DDIMScheduler.from_config(ref.scheduler.config, timestep_spacing="trailing", set_alpha_to_one=True)
    ours.denoiser = ours.components.denoiser()
    b1 = ours("a shirt", num_inference_steps=4, guidance_scale=1.0, latents=lat, output_type="np").images
    ref.scheduler = EulerDiscreteScheduler.from_config(ref.scheduler.config, timestep_spacing="trailing")
    c = _diffusers_images(ref, "a shirt", lat, 4, 1.0, height=16, width=16)
    assert np.abs(c - b1).max() < 2e-3  # measured 4.5e-4 (float32, VE scaling by σ up to 14.6)


def test_no_uncond_call_at_guidance_one(tiny_sd):
    tiny_sd.denoiser.calls = 0
    out = tiny_sd(["a", "b"], num_inference_steps=4, guidance_scale=1.0, output_type="latent")
    assert out.settings["unet_calls"] == 4 and out.settings["unet_sample_evals"] == 8
    out = tiny_sd(["a", "b"], num_inference_steps=4, guidance_scale=3.0, output_type="latent")
    assert out.settings["unet_calls"] == 4 and out.settings["unet_sample_evals"] == 16  # batched CFG: one call per step


def test_weights_frozen(tiny_sd):
    assert all(not p.requires_grad for m in tiny_sd.components.modules() for p in m.parameters())
