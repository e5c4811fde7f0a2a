"""The conditioning passed to a denoiser: text embeddings (SD/SDXL/SD3/FLUX), class labels (pixel models) and
channels concatenated to the sample (super-resolution models' upsampled low-resolution image)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class Conditioning:
    """Per-sample conditioning of a batch of B samples.

    Attributes:
        embeds: text embedding C, ``(B, L, D)`` (SD: last hidden state; SDXL: both encoders'
            penultimate hidden states concatenated along D). ``None`` for pixel models.
        pooled: SDXL pooled text embedding of encoder 2, ``(B, D2)``; ``None`` otherwise.
        time_ids: SDXL micro-conditioning ``(B, 6)`` (original size, crop, target size).
        class_labels: pixel-model class labels ``(B,)`` (long); ``None`` if unconditional.
        concat: channels concatenated to z_t along dim 1 before every network call, ``(B, c, H, W)`` (the
            64→256 upsampler: the low-resolution image bilinearly upsampled to H×W); ``None`` otherwise.
        guidance: FLUX-dev's embedded guidance scale per sample ``(B,)``; ``None`` otherwise.
    SD3: ``embeds`` = CLIP-L ‖ CLIP-G penultimate states (zero-padded to T5's width) then T5's, along L;
    ``pooled`` = both CLIP pooled outputs. FLUX: ``embeds`` = T5, ``pooled`` = CLIP-L's pooled output.
    """

    embeds: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None
    class_labels: torch.Tensor | None = None
    concat: torch.Tensor | None = None
    guidance: torch.Tensor | None = None

    def _fields(self) -> dict[str, torch.Tensor | None]:
        return {"embeds": self.embeds, "pooled": self.pooled, "time_ids": self.time_ids,
                "class_labels": self.class_labels, "concat": self.concat, "guidance": self.guidance}

    def map(self, fn) -> Conditioning:
        """Apply ``fn`` to every tensor field."""
        return Conditioning(**{k: (fn(v) if v is not None else None) for k, v in self._fields().items()})

    def __getitem__(self, index) -> Conditioning:
        return self.map(lambda v: v[index])

    def __len__(self) -> int:
        for v in self._fields().values():
            if v is not None:
                return v.shape[0]
        return 0

    def detach(self) -> Conditioning:
        return self.map(lambda v: v.detach())

    def to(self, device=None, dtype=None) -> Conditioning:
        return self.map(lambda v: v.to(device=device, dtype=dtype if v.is_floating_point() else None))

    def replace(self, **kwargs) -> Conditioning:
        return replace(self, **kwargs)

    @staticmethod
    def cat(items: list[Conditioning]) -> Conditioning:
        """Concatenate along the batch dimension."""
        keys = items[0]._fields().keys()
        out = {}
        for k in keys:
            vals = [getattr(c, k) for c in items]
            out[k] = None if vals[0] is None else torch.cat(vals, dim=0)
        return Conditioning(**out)
