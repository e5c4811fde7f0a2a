"""Prompt encoding for the flow transformers (SPEC §3.5), as diffusers' ``StableDiffusion3Pipeline`` /
``FluxPipeline`` ``encode_prompt``:

* SD3 / SD3.5: CLIP-L and CLIP-G penultimate hidden states ``(B, 77, 768 + 1280)``, zero-padded to T5's width and
  followed by T5's last hidden state ``(B, max_sequence_length, D_T5)`` (zeros when the folder has no T5);
  pooled = CLIP-L ‖ CLIP-G projected outputs ``(B, 2048)``.
* FLUX.1: embeds = T5 ``(B, max_sequence_length, 4096)``, pooled = CLIP-L's pooled output ``(B, 768)``.

Pooled outputs are taken at the tokenizer's real end-of-text position (never at the highest id: a placeholder
token of MinorityPrompt has a larger id). The learnable token lives in the CLIP encoders (``tokenizers`` /
``text_encoders``, as for SD); T5 gets the plain prompt (:meth:`FlowPromptEncoder.fixed_ids`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from minority.core.conditioning import Conditioning
from minority.core.text import PromptEncoder, TokenOverride, _spliced_embeddings

log = logging.getLogger("minority")


class FlowPromptEncoder(PromptEncoder):
    """CLIP encoder(s) plus an optional T5 for ``family`` ``"sd3"`` or ``"flux"``.

    Args:
        tokenizers, text_encoders: SD3 ``[CLIP-L, CLIP-G]``; FLUX ``[CLIP-L]``.
        t5_tokenizer, t5_encoder: the T5 pair, or None (SD3 loaded without T5: zeros as diffusers).
        max_sequence_length: T5 length (SD3 256, FLUX-dev 512, schnell 256 as diffusers' defaults).
        joint_dim: the transformer's ``joint_attention_dim`` (T5 width; SD3's zero T5 and CLIP padding).
    """

    def __init__(self, family: str, tokenizers: Sequence, text_encoders: Sequence, t5_tokenizer=None,
                 t5_encoder=None, max_sequence_length: int = 256, joint_dim: int = 4096):
        super().__init__(tokenizers, text_encoders, xl=False)
        self.family, self.t5_tokenizer, self.t5_encoder = family, t5_tokenizer, t5_encoder
        self.max_sequence_length, self.joint_dim = int(max_sequence_length), int(joint_dim)
        self.token_keys = ("clip_l",) if family == "flux" else ("clip_l", "clip_g")  # token-file keys per encoder

    def fixed_ids(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """T5 ids ``(B, max_sequence_length)`` (empty list without T5)."""
        if self.t5_tokenizer is None:
            return []
        tok = self.t5_tokenizer
        out = tok(list(prompts), padding="max_length", max_length=self.max_sequence_length, truncation=True,
                  add_special_tokens=True, return_tensors="pt")
        return [out.input_ids]

    def tokenize(self, prompts: Sequence[str], warn: bool = True) -> list[torch.Tensor]:
        return super().tokenize(prompts, warn) + self.fixed_ids(prompts)

    def _clip(self, k: int, x: torch.Tensor, override: TokenOverride | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate hidden states (B, L, D), pooled (B, D')) of CLIP encoder k, pooled at the real EOS."""
        tok, enc = self.tokenizers[k], self.text_encoders[k]
        with _spliced_embeddings(enc, override):
            out = enc(x, output_hidden_states=True)
        eos = (x == tok.eos_token_id).int().argmax(dim=-1)  # first end-of-text position
        last = out.last_hidden_state[torch.arange(x.shape[0], device=x.device), eos]
        pooled = enc.text_projection(last) if hasattr(enc, "text_projection") else last
        return out.hidden_states[-2], pooled

    def encode_ids(self, ids: list[torch.Tensor], overrides: list[TokenOverride | None] | None = None) -> Conditioning:
        """Encode ids (one tensor per CLIP encoder, then T5's if any) into the family's :class:`Conditioning`."""
        n = len(self.text_encoders)
        overrides = list(overrides or []) + [None] * (n + 1)
        clip = [self._clip(k, ids[k].to(self.device), overrides[k]) for k in range(n)]
        t5 = self._t5(ids[n] if len(ids) > n else None, ids[0].shape[0])
        if self.family == "flux":
            return Conditioning(embeds=t5, pooled=clip[0][1])
        hidden = torch.cat([h for h, _ in clip], dim=-1)
        hidden = torch.nn.functional.pad(hidden, (0, t5.shape[-1] - hidden.shape[-1]))
        return Conditioning(embeds=torch.cat([hidden, t5.to(hidden.dtype)], dim=-2),
                            pooled=torch.cat([p for _, p in clip], dim=-1))

    def _t5(self, ids: torch.Tensor | None, batch: int) -> torch.Tensor:
        if self.t5_encoder is None or ids is None:
            p = next(self.text_encoders[0].parameters())
            return torch.zeros(batch, self.max_sequence_length, self.joint_dim, device=p.device, dtype=p.dtype)
        return self.t5_encoder(ids.to(next(self.t5_encoder.parameters()).device))[0]

    def encode_negative(self, negative_prompts: Sequence[str] | None, batch: int) -> Conditioning:
        """The unconditional branch: the negative prompts, "" by default (as diffusers; no zeros)."""
        return self.encode(negative_prompts if negative_prompts is not None else [""] * batch)
