"""The diffusers layout of a guided-diffusion ``UNetModel``: its ``UNet2DModel`` configuration and the map from
each checkpoint tensor to the diffusers tensor(s) it becomes.

Block for block (guided-diffusion ``unet.py`` → diffusers):

* ``time_embed.{0,2}`` (Linear C→4C, SiLU, Linear 4C→4C on the sinusoidal embedding [cos, sin] of width C)
  → ``time_embedding.linear_{1,2}`` (``flip_sin_to_cos=True``, ``freq_shift=0``); ``label_emb`` →
  ``class_embedding`` (added to the time embedding, ``num_class_embeds``).
* ``input_blocks``: per level l (channels mult_l·C, downsampling rate ds = 2^l) ``num_res_blocks`` ResBlocks,
  each followed by an AttentionBlock when ds ∈ image_size // attention_resolutions, then (not on the last level)
  a stride-2 conv or, with ``resblock_updown``, a ResBlock with 2×2 average pooling → ``down_blocks[l]``
  (``AttnDownBlock2D`` where attention, else ``DownBlock2D`` / ``ResnetDownsampleBlock2D``).
* ``middle_block`` (ResBlock, AttentionBlock, ResBlock) → ``mid_block`` (``UNetMidBlock2D``).
* ``output_blocks``: per level in reverse ``num_res_blocks + 1`` ResBlocks on [h, skip] (concatenated in this
  order), attention as above, then nearest ×2 + conv or an up-ResBlock → ``up_blocks``.
* ResBlock ``in_layers.{0,2}`` / ``emb_layers.1`` / ``out_layers.{0,3}`` / ``skip_connection`` → ``norm1`` /
  ``conv1`` / ``time_emb_proj`` (2·C_out wide for ``use_scale_shift_norm``: h = norm(h)(1 + scale) + shift,
  diffusers ``resnet_time_scale_shift="scale_shift"``) / ``norm2`` / ``conv2`` / ``conv_shortcut``.
* AttentionBlock ``norm`` / ``qkv`` (1×1 conv to 3C) / ``proj_out`` → ``group_norm`` / ``to_q, to_k, to_v`` /
  ``to_out.0``. The rows of ``qkv`` are ordered heads-first in the legacy ``QKVAttentionLegacy``
  (row h·3c + s·c + d for head h, s ∈ {q, k, v}, dimension d < c = C/H) and q/k/v-first with
  ``use_new_attention_order`` (``QKVAttention``: row s·C + h·c + d); diffusers' to_q row is h·c + d in both.
* ``out.{0,2}`` → ``conv_norm_out`` / ``conv_out`` (6 output channels with ``learn_sigma``: [ε, v]).

Every GroupNorm is guided-diffusion's GroupNorm32 (32 groups, eps 1e-5, computed in float32).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from minority.pipelines.adm.flags import NUM_CLASSES, ADMFlags

Op = str  # "copy", "conv1d" (drop a trailing kernel dimension of 1), "q" / "k" / "v" (rows of a qkv tensor)


@dataclass(frozen=True)
class Entry:
    """One checkpoint tensor ``src`` and the diffusers tensors it fills: ``[(name, op), ...]``; ``heads`` is
    H of its attention layer and ``legacy`` its qkv row order (qkv tensors only)."""

    src: str
    dst: tuple[tuple[str, Op], ...]
    heads: int = 0
    legacy: bool = False


def attention_levels(f: ADMFlags) -> list[bool]:
    """Whether level l (downsampling rate 2^l) has attention."""
    return [2**lvl in f.attention_ds for lvl in range(len(f.mults))]


def heads_of(f: ADMFlags, channels: int, up: bool) -> int:
    """H of an attention layer of ``channels`` channels: C // num_head_channels, else num_heads (the up path:
    num_heads_upsample unless -1)."""
    if f.num_head_channels != -1:
        return channels // f.num_head_channels
    return f.num_heads if (not up or f.num_heads_upsample == -1) else f.num_heads_upsample


def unet_config(f: ADMFlags) -> tuple[str, dict]:
    """``(class name, config)`` of the diffusers model: ``UNet2DModel`` where its single ``attention_head_dim``
    says it exactly (a fixed head width, or a fixed head count on equally wide attention layers), else
    :class:`minority.nets.adm.ADMUNet2DModel` (a fixed head count with ``adm_num_heads``)."""
    mults = [int(m) for m in f.mults]
    channels = [m * f.num_channels for m in mults]
    attn = attention_levels(f)
    updown = f.resblock_updown
    down = ["AttnDownBlock2D" if a else ("ResnetDownsampleBlock2D" if updown else "DownBlock2D") for a in attn]
    up = ["AttnUpBlock2D" if a else ("ResnetUpsampleBlock2D" if updown else "UpBlock2D") for a in reversed(attn)]
    cfg = dict(
        sample_size=f.image_size, in_channels=6 if f.super_res else 3, out_channels=6 if f.learn_sigma else 3,
        time_embedding_type="positional", flip_sin_to_cos=True, freq_shift=0, down_block_types=tuple(down),
        up_block_types=tuple(up), mid_block_type="UNetMidBlock2D", block_out_channels=tuple(channels),
        layers_per_block=f.num_res_blocks, downsample_padding=1, downsample_type="resnet" if updown else "conv",
        upsample_type="resnet" if updown else "conv", dropout=float(f.dropout), act_fn="silu",
        norm_num_groups=32, attn_norm_num_groups=32, norm_eps=1e-5,
        resnet_time_scale_shift="scale_shift" if f.use_scale_shift_norm else "default", add_attention=True,
        num_class_embeds=NUM_CLASSES if f.class_cond else None,
    )
    attn_widths = {c for c, a in zip(channels, attn) if a} | {channels[-1]}  # the middle block always attends
    if f.num_head_channels != -1:
        return "UNet2DModel", {**cfg, "attention_head_dim": f.num_head_channels}
    up_heads = heads_of(f, 0, up=True)
    if len(attn_widths) == 1 and up_heads == f.num_heads:
        return "UNet2DModel", {**cfg, "attention_head_dim": attn_widths.pop() // f.num_heads}
    return "ADMUNet2DModel", {**cfg, "attention_head_dim": None, "adm_num_heads": f.num_heads,
                              "adm_num_heads_upsample": up_heads}


def _pair(src: str, dst: str, names=("weight", "bias"), op: Op = "copy") -> Iterator[Entry]:
    for n in names:
        yield Entry(f"{src}.{n}", ((f"{dst}.{n}", op),))


def _resblock(src: str, dst: str, has_skip: bool) -> Iterator[Entry]:
    yield from _pair(f"{src}.in_layers.0", f"{dst}.norm1")
    yield from _pair(f"{src}.in_layers.2", f"{dst}.conv1")
    yield from _pair(f"{src}.emb_layers.1", f"{dst}.time_emb_proj")
    yield from _pair(f"{src}.out_layers.0", f"{dst}.norm2")
    yield from _pair(f"{src}.out_layers.3", f"{dst}.conv2")
    if has_skip:
        yield from _pair(f"{src}.skip_connection", f"{dst}.conv_shortcut")


def _attention(src: str, dst: str, heads: int, legacy: bool) -> Iterator[Entry]:
    yield from _pair(f"{src}.norm", f"{dst}.group_norm")
    for n in ("weight", "bias"):
        yield Entry(f"{src}.qkv.{n}", tuple((f"{dst}.to_{s}.{n}", s) for s in "qkv"), heads=heads, legacy=legacy)
    yield Entry(f"{src}.proj_out.weight", ((f"{dst}.to_out.0.weight", "conv1d"),))
    yield Entry(f"{src}.proj_out.bias", ((f"{dst}.to_out.0.bias", "copy"),))


def layout(f: ADMFlags, target_keys: set[str]) -> list[Entry]:  # long: one walk over guided-diffusion's blocks
    """Every tensor of the checkpoint the flags describe, in guided-diffusion's module order, with its diffusers
    destination(s). ``target_keys``: the diffusers state-dict keys (a ResBlock has a ``skip_connection``
    exactly when its diffusers block has a ``conv_shortcut``: when its input and output widths differ)."""
    mults, attn, nrb = [int(m) for m in f.mults], attention_levels(f), f.num_res_blocks
    legacy = not f.use_new_attention_order
    levels = len(mults)

    def res(src: str, dst: str) -> Iterator[Entry]:
        return _resblock(src, dst, f"{dst}.conv_shortcut.weight" in target_keys)

    def att(src: str, dst: str, level: int, up: bool) -> Iterator[Entry]:
        return _attention(src, dst, heads_of(f, mults[level] * f.num_channels, up), legacy)

    out: list[Entry] = [*_pair("time_embed.0", "time_embedding.linear_1"), *_pair("time_embed.2", "time_embedding.linear_2")]
    if f.class_cond:
        out.append(Entry("label_emb.weight", (("class_embedding.weight", "copy"),)))
    out += _pair("input_blocks.0.0", "conv_in")
    k = 1
    for lvl in range(levels):
        for j in range(nrb):
            out += res(f"input_blocks.{k}.0", f"down_blocks.{lvl}.resnets.{j}")
            if attn[lvl]:
                out += att(f"input_blocks.{k}.1", f"down_blocks.{lvl}.attentions.{j}", lvl, up=False)
            k += 1
        if lvl != levels - 1:
            if f.resblock_updown:
                out += res(f"input_blocks.{k}.0", f"down_blocks.{lvl}.downsamplers.0")
            else:
                out += _pair(f"input_blocks.{k}.0.op", f"down_blocks.{lvl}.downsamplers.0.conv")
            k += 1
    out += res("middle_block.0", "mid_block.resnets.0")
    out += _attention("middle_block.1", "mid_block.attentions.0", heads_of(f, mults[-1] * f.num_channels, False), legacy)
    out += res("middle_block.2", "mid_block.resnets.1")
    k = 0
    for u, lvl in enumerate(reversed(range(levels))):
        for j in range(nrb + 1):
            out += res(f"output_blocks.{k}.0", f"up_blocks.{u}.resnets.{j}")
            idx = 1
            if attn[lvl]:
                out += att(f"output_blocks.{k}.1", f"up_blocks.{u}.attentions.{j}", lvl, up=True)
                idx = 2
            if lvl and j == nrb:
                if f.resblock_updown:
                    out += res(f"output_blocks.{k}.{idx}", f"up_blocks.{u}.upsamplers.0")
                else:
                    out += _pair(f"output_blocks.{k}.{idx}.conv", f"up_blocks.{u}.upsamplers.0.conv")
            k += 1
    out += _pair("out.0", "conv_norm_out")
    out += _pair("out.2", "conv_out")
    return out
