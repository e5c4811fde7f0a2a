"""Model loading: SDXL-Lightning UNet files, family defaults, clear errors."""

from __future__ import annotations

import pytest
import torch

from minority import MinorityError, MinorityPipeline, load_components


def test_lightning_unet_file_loads_with_trailing_grid(tiny_sdxl_dir, tmp_path):
    from safetensors.torch import save_file

    base = load_components(str(tiny_sdxl_dir))
    state = {k: v + 0.01 for k, v in base.unet.state_dict().items()}
    save_file(state, str(tmp_path / "lightning_4step_unet.safetensors"))
    comps = load_components(str(tiny_sdxl_dir), lightning_unet=str(tmp_path / "lightning_4step_unet.safetensors"))
    assert comps.family == "sdxl-lightning"
    assert comps.scheduler.config.timestep_spacing == "trailing"
    k = next(iter(state))
    assert torch.equal(comps.unet.state_dict()[k], state[k])
    pipe = MinorityPipeline(comps)
    out = pipe("a bag", output_type="latent")
    assert out.settings["steps"] == 4 and out.settings["guidance"] == 1.0 and out.settings["unet_calls"] == 4
    mp = pipe("a bag", method="minority-prompt", output_type="latent", opt_steps=1)
    assert mp.settings["params"]["opt_every"] == 1 and mp.settings["params"]["init_word"] == "handsome"


def test_lightning_errors(tiny_sdxl_dir, tiny_sd_dir, tmp_path):
    from safetensors.torch import save_file

    save_file({"nope": torch.zeros(1)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(MinorityError, match="does not fit the base UNet"):
        load_components(str(tiny_sdxl_dir), lightning_unet=str(tmp_path / "wrong.safetensors"))
    with pytest.raises(MinorityError, match="needs an SDXL base"):
        load_components(str(tiny_sd_dir), lightning_unet=str(tmp_path / "wrong.safetensors"))
    (tmp_path / "weights.ckpt").write_bytes(b"x")
    with pytest.raises(MinorityError, match="safetensors"):
        load_components(str(tiny_sdxl_dir), lightning_unet=str(tmp_path / "weights.ckpt"))


def test_folder_without_model_index(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MinorityError, match="not a diffusers model folder"):
        load_components(str(tmp_path / "empty"))


def test_family_defaults(tiny_sd):
    out = tiny_sd("a coat", output_type="latent", num_inference_steps=None)
    assert out.settings["steps"] == 50 and out.settings["guidance"] == 7.5
