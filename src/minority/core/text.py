"""Prompt encoding for SD 1.x/2.x (one CLIP encoder) and SDXL (two encoders + pooled embedding).

Matches diffusers' ``encode_prompt`` (padding to ``model_max_length``, truncation with a warning, SDXL
penultimate hidden states, ``force_zeros_for_empty_prompt``) with one deliberate difference: the SDXL
pooled embedding is always taken at the tokenizer's real end-of-text position, never at the highest
token id (legacy CLIP configs with ``eos_token_id=2`` pool at the argmax id, which is wrong as soon as
a placeholder token with a larger id is added — SPEC §3.1 pitfall).

Token embeddings can be overridden per sample (:meth:`PromptEncoder.encode_ids` ``overrides``): the
rows of chosen token ids are replaced by given vectors inside the embedding lookup, which keeps the
encoder frozen and makes the text embedding differentiable w.r.t. those vectors only (MinorityPrompt).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from minority.core.conditioning import Conditioning

log = logging.getLogger("minority")


@dataclass
class TokenOverride:
    """Replace the embedding of ``token_ids[b]`` in sample b by ``vectors[b]``.

    Attributes:
        token_ids: ``(B, n)`` long, the placeholder ids of each sample (n tokens per sample).
        vectors: ``(B, n, D)`` the embeddings to splice in (may require grad).
    """

    token_ids: torch.Tensor
    vectors: torch.Tensor


@contextmanager
def _spliced_embeddings(text_encoder, override: TokenOverride | None):
    """Within the context, the encoder's token-embedding lookup returns ``override`` rows.

    Placeholder ids may lie outside the vocabulary (markers): a pre-hook maps them to id 0 for the lookup,
    and a forward hook splices the given vectors in at their positions. No weight is touched.
    """
    if override is None:
        yield
        return
    emb = text_encoder.get_input_embeddings()
    state: dict = {}

    def pre_hook(module, args):
        ids = args[0]  # (B, L)
        markers = override.token_ids.to(ids.device)
        masks = [ids == markers[:, j : j + 1] for j in range(markers.shape[1])]  # each (B, L)
        state["masks"] = masks
        hit = torch.stack(masks).any(0)
        return (ids.masked_fill(hit, 0), *args[1:])

    def hook(module, args, output):
        out = output
        vec = override.vectors.to(device=out.device, dtype=out.dtype)
        for j, mask in enumerate(state["masks"]):
            out = torch.where(mask.unsqueeze(-1), vec[:, j].unsqueeze(1), out)
        return out

    handles = [emb.register_forward_pre_hook(pre_hook), emb.register_forward_hook(hook)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class PromptEncoder:
    """Tokenises and encodes prompts for one or two CLIP text encoders.

    Args:
        tokenizers: ``[tokenizer]`` (SD) or ``[tokenizer, tokenizer_2]`` (SDXL).
        text_encoders: matching ``CLIPTextModel`` / ``CLIPTextModelWithProjection`` modules (frozen).
        xl: SDXL conventions (penultimate hidden states, pooled embedding of encoder 2).
        force_zeros_for_empty_prompt: SDXL: an absent negative prompt gives zero embeddings.
    """

    def __init__(self, tokenizers: Sequence, text_encoders: Sequence, xl: bool, force_zeros_for_empty_prompt: bool = False):
        self.tokenizers = list(tokenizers)
        self.text_encoders = list(text_encoders)
        self.xl = xl
        self.force_zeros_for_empty_prompt = force_zeros_for_empty_prompt

    @property
    def device(self) -> torch.device:
        return next(self.text_encoders[0].parameters()).device

    def tokenize(self, prompts: Sequence[str], warn: bool = True) -> list[torch.Tensor]:
        """Token ids per encoder, each ``(B, model_max_length)``; over-long prompts are truncated with a warning."""
        ids = []
        for k, tok in enumerate(self.tokenizers):
            out = tok(list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
            if warn and k == 0:
                for p in prompts:
                    n = len(tok(p, truncation=False).input_ids)
                    if n > tok.model_max_length:
                        log.warning(
                            "Prompt truncated: %d tokens dropped (CLIP takes %d including start/end tokens): %r",
                            n - tok.model_max_length, tok.model_max_length, p[:80],
                        )
            ids.append(out.input_ids)
        return ids

    def encode_ids(
        self,
        ids: list[torch.Tensor],
        overrides: list[TokenOverride | None] | None = None,
    ) -> Conditioning:
        """Encode token ids (one tensor per encoder) into a :class:`Conditioning`.

        Args:
            ids: per encoder, ``(B, L)`` long.
            overrides: per encoder, optional :class:`TokenOverride` spliced into its embedding lookup.
        Returns:
            ``Conditioning(embeds (B, L, D), pooled (B, D2) | None)``.
        """
        overrides = overrides or [None] * len(self.text_encoders)
        hidden, pooled = [], None
        for k, (tok, enc) in enumerate(zip(self.tokenizers, self.text_encoders)):
            x = ids[k].to(self.device)
            with _spliced_embeddings(enc, overrides[k]):
                out = enc(x, output_hidden_states=self.xl)
            if self.xl:
                hidden.append(out.hidden_states[-2])
                if hasattr(enc, "text_projection"):
                    eos = (x == tok.eos_token_id).int().argmax(dim=-1)  # first end-of-text position
                    pooled = enc.text_projection(out.last_hidden_state[torch.arange(x.shape[0], device=x.device), eos])
            else:
                hidden.append(out.last_hidden_state)
        return Conditioning(embeds=torch.cat(hidden, dim=-1), pooled=pooled)

    def fixed_ids(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """Token ids of encoders that never carry a learnable token (none here; T5 of SD3 / FLUX)."""
        return []

    def encode(self, prompts: Sequence[str]) -> Conditioning:
        """Encode prompts (frozen encoders, no graph)."""
        with torch.no_grad():
            return self.encode_ids(self.tokenize(prompts))

    def encode_negative(self, negative_prompts: Sequence[str] | None, batch: int) -> Conditioning:
        """Unconditional branch: encode the negative prompts ("" if None), or zeros for SDXL's
        ``force_zeros_for_empty_prompt`` when no negative prompt is given (as diffusers)."""
        if negative_prompts is None and self.xl and self.force_zeros_for_empty_prompt:
            ref = self.encode([""])
            return ref.map(lambda v: torch.zeros_like(v).expand(batch, *v.shape[1:]).clone())
        if negative_prompts is None:
            negative_prompts = [""] * batch
        return self.encode(negative_prompts)
