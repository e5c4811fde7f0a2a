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
