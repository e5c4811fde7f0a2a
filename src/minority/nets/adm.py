"""``ADMUNet2DModel``: a diffusers ``UNet2DModel`` with guided-diffusion's fixed *number* of attention heads.

guided-diffusion's ``UNetModel`` (Dhariwal & Nichol 2021, "ADM") maps onto ``UNet2DModel`` block for block
(see :mod:`minority.pipelines.adm`), except for one setting: with ``--num_heads H`` (and no
``--num_head_channels``) every attention layer has H heads, so the head width C_l/H changes with the level's
channel count C_l. ``UNet2DModel`` has one ``attention_head_dim`` (head width) for all blocks. This subclass
keeps the whole ``UNet2DModel`` layout and weights and rebuilds each attention layer with ``adm_num_heads``
heads (down path and middle block) and ``adm_num_heads_upsample`` heads (up path; guided-diffusion's
deprecated ``num_heads_upsample``). The weights' shapes do not depend on the head count, so the state dict is
the plain ``UNet2DModel`` one; only the split of the C channels into heads (channel h·(C/H) + d = head h,
dimension d) differs.
"""

from __future__ import annotations

from diffusers import UNet2DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import Attention
from torch import nn


def _with_heads(attn: Attention, heads: int) -> Attention:
    """A new ``Attention`` like ``attn`` (a spatial self-attention of C channels) split into ``heads`` heads."""
    channels, norm = attn.query_dim, attn.group_norm
    if channels % heads:
        raise ValueError(f"attention of {channels} channels cannot be split into {heads} heads")
    return Attention(channels, heads=heads, dim_head=channels // heads, rescale_output_factor=attn.rescale_output_factor,
                     eps=norm.eps if norm is not None else 1e-5, norm_num_groups=norm.num_groups if norm is not None else None,
                     residual_connection=True, bias=True, upcast_softmax=True, _from_deprecated_attn_block=True)


def _rebuild(blocks: nn.ModuleList | list, heads: int) -> None:
    for block in blocks:
        attentions = getattr(block, "attentions", None) or []
        for i, attn in enumerate(attentions):
            if attn is not None:
                attentions[i] = _with_heads(attn, heads)


class ADMUNet2DModel(UNet2DModel):
    """``UNet2DModel`` whose attention layers have a fixed number of heads (``adm_num_heads`` in the down path
    and the middle block, ``adm_num_heads_upsample`` in the up path) instead of a fixed head width. Every other
    argument is ``UNet2DModel``'s; ``forward(sample (B, C_in, H, W), timestep, class_labels (B,))`` likewise."""

    @register_to_config
    def __init__(  # long: UNet2DModel's full signature (diffusers reads the config keys from it) plus two
        self,
        sample_size: int | tuple[int, int] | None = None,
        in_channels: int = 3,
        out_channels: int = 3,
        center_input_sample: bool = False,
        time_embedding_type: str = "positional",
        time_embedding_dim: int | None = None,
        freq_shift: int = 0,
        flip_sin_to_cos: bool = True,
        down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        mid_block_type: str | None = "UNetMidBlock2D",
        up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        block_out_channels: tuple[int, ...] = (224, 448, 672, 896),
        layers_per_block: int = 2,
        mid_block_scale_factor: float = 1,
        downsample_padding: int = 1,
        downsample_type: str = "conv",
        upsample_type: str = "conv",
        dropout: float = 0.0,
        act_fn: str = "silu",
        attention_head_dim: int | None = 8,
        norm_num_groups: int = 32,
        attn_norm_num_groups: int | None = None,
        norm_eps: float = 1e-5,
        resnet_time_scale_shift: str = "default",
        add_attention: bool = True,
        class_embed_type: str | None = None,
        num_class_embeds: int | None = None,
        num_train_timesteps: int | None = None,
        adm_num_heads: int = 1,
        adm_num_heads_upsample: int | None = None,
    ):
        super().__init__(
            sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
            center_input_sample=center_input_sample, time_embedding_type=time_embedding_type,
            time_embedding_dim=time_embedding_dim, freq_shift=freq_shift, flip_sin_to_cos=flip_sin_to_cos,
            down_block_types=down_block_types, mid_block_type=mid_block_type, up_block_types=up_block_types,
            block_out_channels=block_out_channels, layers_per_block=layers_per_block,
            mid_block_scale_factor=mid_block_scale_factor, downsample_padding=downsample_padding,
            downsample_type=downsample_type, upsample_type=upsample_type, dropout=dropout, act_fn=act_fn,
            attention_head_dim=attention_head_dim, norm_num_groups=norm_num_groups,
            attn_norm_num_groups=attn_norm_num_groups, norm_eps=norm_eps,
            resnet_time_scale_shift=resnet_time_scale_shift, add_attention=add_attention,
            class_embed_type=class_embed_type, num_class_embeds=num_class_embeds,
            num_train_timesteps=num_train_timesteps,
        )
        up_heads = adm_num_heads if adm_num_heads_upsample in (None, -1) else adm_num_heads_upsample
        _rebuild(self.down_blocks, adm_num_heads)
        if self.mid_block is not None:
            _rebuild([self.mid_block], adm_num_heads)
        _rebuild(self.up_blocks, up_heads)
