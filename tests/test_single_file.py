"""Single-file SD checkpoints (issue 15 item 7): one original-layout .safetensors + --config, offline.

The single file is written from the tiny random SD folder by a diffusers -> original (LDM / CompVis) key converter
written here from the original layout (``model.diffusion_model.input_blocks.{i}.{0|1}``, ``first_stage_model``
``encoder.down.{i}.block.{j}``, ``cond_stage_model.transformer.*``) — not from diffusers' converter — so loading
it back through diffusers' ``from_single_file`` checks both directions. Every tensor must be used exactly once.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPTextModel

from minority.cli import main
from minority.errors import MinorityError
from minority.pipelines.loading import load_components

_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
           ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _unet_to_ldm(sd: dict, layers: int, n_blocks: int, attn_down: set, attn_up: set) -> dict:
    """diffusers UNet2DConditionModel keys -> original ``model.diffusion_model.*`` keys (LDM openaimodel layout)."""
    rules: list[tuple[str, str]] = []
    for b in range(n_blocks):
        for j in range(layers):
            i = 1 + b * (layers + 1) + j  # input block index: conv_in is 0, then (resnet[, attention]) per layer
            rules.append((f"down_blocks.{b}.resnets.{j}.", f"input_blocks.{i}.0."))
            if b in attn_down:
                rules.append((f"down_blocks.{b}.attentions.{j}.", f"input_blocks.{i}.1."))
        if b < n_blocks - 1:
            rules.append((f"down_blocks.{b}.downsamplers.0.conv.", f"input_blocks.{(b + 1) * (layers + 1)}.0.op."))
        for j in range(layers + 1):
            i = b * (layers + 1) + j
            rules.append((f"up_blocks.{b}.resnets.{j}.", f"output_blocks.{i}.0."))
            if b in attn_up:
                rules.append((f"up_blocks.{b}.attentions.{j}.", f"output_blocks.{i}.1."))
        if b < n_blocks - 1:
            last = b * (layers + 1) + layers
            rules.append((f"up_blocks.{b}.upsamplers.0.", f"output_blocks.{last}.{2 if b in attn_up else 1}."))
    rules += [("mid_block.resnets.0.", "middle_block.0."), ("mid_block.attentions.0.", "middle_block.1."),
              ("mid_block.resnets.1.", "middle_block.2.")]
    rules += [(k + ".", v + ".") for k, v in _UNET_TOP.items()]
    out = {}
    for key, value in sd.items():
        prefix = next(p for p in sorted((r for r in rules if key.startswith(r[0])), key=lambda r: -len(r[0])))
        rest = key[len(prefix[0]):]
        if ".resnets." in prefix[0]:
            for d, o in _RESNET:
                rest = re.sub(rf"^{d}\.", o + ".", rest)
        out["model.diffusion_model." + prefix[1] + rest] = value
    return out


def _vae_to_ldm(sd: dict, n_blocks: int) -> dict:
    """diffusers AutoencoderKL keys -> original ``first_stage_model.*`` keys (decoder blocks in reverse order;
    attention projections as 1×1 convolutions)."""
    out = {}
    for key, value in sd.items():
        k = key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", k)
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
        k = re.sub(r"decoder\.up_blocks\.(\d+)\.",
                   lambda m: f"decoder.up.{n_blocks - 1 - int(m.group(1))}.", k)
        k = re.sub(r"(decoder\.up\.\d+)\.resnets\.", r"\1.block.", k)
        k = re.sub(r"(decoder\.up\.\d+)\.upsamplers\.0\.", r"\1.upsample.", k)
        k = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m.group(1)) + 1}.", k)
        if "mid_block.attentions.0." in k:
            k = k.replace("mid_block.attentions.0.", "mid.attn_1.")
            for d, o in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
                k = k.replace(f".{d}.", f".{o}.")
            if value.ndim == 2:
                value = value[:, :, None, None]
        out["first_stage_model." + k] = value
    return out


@pytest.fixture(scope="module")
def single_file(tiny_sd_dir, tmp_path_factory):
    unet = UNet2DConditionModel.from_pretrained(tiny_sd_dir, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(tiny_sd_dir, subfolder="vae")
    text = CLIPTextModel.from_pretrained(tiny_sd_dir, subfolder="text_encoder")
    down = {i for i, t in enumerate(unet.config.down_block_types) if "CrossAttn" in t}
    up = {i for i, t in enumerate(unet.config.up_block_types) if "CrossAttn" in t}
    n = len(unet.config.block_out_channels)
    u, v = unet.state_dict(), vae.state_dict()
    t = {k: x for k, x in text.state_dict().items() if not k.endswith("position_ids")}
    ckpt = {**_unet_to_ldm(u, unet.config.layers_per_block, n, down, up), **_vae_to_ldm(v, n),
            **{"cond_stage_model.transformer." + ("" if k.startswith("text_model.") else "text_model.") + k: x
               for k, x in t.items()}}  # the original file keeps HF's text_model.* names (newer transformers drop it)
    assert len(ckpt) == len(u) + len(v) + len(t)  # each tensor under exactly one original key
    path = tmp_path_factory.mktemp("single") / "my-model.safetensors"
    save_file({k: x.contiguous() for k, x in ckpt.items()}, str(path))
    return path


def test_single_file_loads_the_same_weights(single_file, tiny_sd_dir):
    folder = load_components(str(tiny_sd_dir))
    one = load_components(str(single_file), config=str(tiny_sd_dir))
    assert one.family == "sd" and one.source == "single-file"
    for a, b in ((folder.unet, one.unet), (folder.vae, one.vae), (folder.text_encoders[0], one.text_encoders[0])):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), type(a).__name__
        assert not any(p.requires_grad for p in b.parameters())


def test_weights_come_from_the_file_not_the_config_folder(single_file, tiny_sd_dir, tmp_path):
    from safetensors.torch import load_file

    ckpt = load_file(str(single_file))
    ckpt["model.diffusion_model.input_blocks.0.0.weight"] += 1.0  # conv_in
    ckpt["first_stage_model.decoder.up.0.block.0.conv1.bias"] -= 2.0  # last decoder block (reversed order)
    edited = tmp_path / "edited.safetensors"
    save_file(ckpt, str(edited))
    folder, one = load_components(str(tiny_sd_dir)), load_components(str(edited), config=str(tiny_sd_dir))
    assert torch.equal(one.unet.conv_in.weight, folder.unet.conv_in.weight + 1.0)
    n = len(folder.vae.config.block_out_channels)
    dec_f, dec_o = folder.vae.decoder.up_blocks[n - 1].resnets[0].conv1.bias, one.vae.decoder.up_blocks[n - 1].resnets[0].conv1.bias
    assert torch.equal(dec_o, dec_f - 2.0)


def test_generate_from_a_single_file_equals_the_folder(single_file, tiny_sd_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    common = ["generate", "a cat", "--seeds", "0-1", "--steps", "3"]
    assert main([*common, "--model", str(tiny_sd_dir), "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--model", str(single_file), "--config", str(tiny_sd_dir), "--out", str(tmp_path / "b")]) == 0
    for name in ("00000_000000.png", "00000_000001.png"):
        a = np.asarray(Image.open(tmp_path / "a" / "images" / name))
        b = np.asarray(Image.open(tmp_path / "b" / "images" / name))
        assert np.array_equal(a, b)
    assert '"model_config"' in (tmp_path / "b" / "config.json").read_text()


def test_offline_without_config_says_pass_config(single_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("minority.pipelines.loading._OFFLINE", True)
    code = main(["generate", "a cat", "--model", str(single_file), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "single-file checkpoint" in err[0] and "--config" in err[0]


def test_bad_single_files_and_configs(single_file, tiny_sd_dir, tmp_path):
    torn = tmp_path / "torn.safetensors"
    torn.write_bytes(single_file.read_bytes()[:1000])
    with pytest.raises(MinorityError, match="not a readable safetensors file"):
        load_components(str(torn), config=str(tiny_sd_dir))
    other = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.weight": torch.zeros(2)}, str(other))
    with pytest.raises(MinorityError, match="no Stable Diffusion UNet"):
        load_components(str(other), config=str(tiny_sd_dir))
    with pytest.raises(MinorityError, match="has no model_index.json"):
        load_components(str(single_file), config=str(tmp_path))
    with pytest.raises(MinorityError, match="applies to single-file"):
        load_components(str(tiny_sd_dir), config=str(tiny_sd_dir))
