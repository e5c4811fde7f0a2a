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

import copy
import logging
from collections.abc import Sequence

import torch

from minority.core.conditioning import Conditioning
from minority.core.text import PromptEncoder, TokenOverride, _spliced_embeddings
from minority.core.tokens import insert_placeholders, word_token_id
from minority.errors import MinorityError

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
        t5 = self._t5(ids[n] if len(ids) > n else None, ids[0].shape[0], overrides[n])
        if self.family == "flux":
            return Conditioning(embeds=t5, pooled=clip[0][1])
        hidden = torch.cat([h for h, _ in clip], dim=-1)
        hidden = torch.nn.functional.pad(hidden, (0, t5.shape[-1] - hidden.shape[-1]))
        return Conditioning(embeds=torch.cat([hidden, t5.to(hidden.dtype)], dim=-2),
                            pooled=torch.cat([p for _, p in clip], dim=-1))

    def _t5(self, ids: torch.Tensor | None, batch: int, override: TokenOverride | None = None) -> torch.Tensor:
        if self.t5_encoder is None or ids is None:
            p = next(self.text_encoders[0].parameters())
            return torch.zeros(batch, self.max_sequence_length, self.joint_dim, device=p.device, dtype=p.dtype)
        with _spliced_embeddings(getattr(self.t5_encoder, "encoder", self.t5_encoder), override):  # T5Stack's lookup
            return self.t5_encoder(ids.to(next(self.t5_encoder.parameters()).device))[0]

    def encode_negative(self, negative_prompts: Sequence[str] | None, batch: int) -> Conditioning:
        """The unconditional branch: the negative prompts, "" by default (as diffusers; no zeros)."""
        return self.encode(negative_prompts if negative_prompts is not None else [""] * batch)


def t5_placeholder_ids(tokenizer, prompts: Sequence[str], num_tokens: int, position: str, marker: int,
                       max_length: int) -> torch.Tensor:
    """T5 ids ``(B, max_length)`` of ``prompts`` with ``num_tokens`` placeholder ids ``marker, marker+1, ...``.

    The ids are exactly those the tokenizer gives for ``"prompt <tok>"`` (``"<tok> prompt"`` for
    ``position="start"``) once ``<tok>`` (and ``<tok>_1``, ...) are added tokens — what a user gets after loading the
    token file into a diffusers pipeline (sentencepiece may put a lone ``▁`` before an added token).
    """
    tok = copy.deepcopy(tokenizer)
    names = [f"<minority-slot-{j}>" for j in range(num_tokens)]
    tok.add_tokens(names)
    added = tok.convert_tokens_to_ids(names)
    rows = []
    for p in prompts:
        text = f"{p} {' '.join(names)}" if position == "end" else f"{' '.join(names)} {p}"
        row = tok(text, padding="max_length", max_length=max_length, truncation=True).input_ids
        if sum(i in added for i in row) != num_tokens:
            raise MinorityError(f"Prompt too long for the learnable T5 token(s) (T5 takes {max_length} tokens): "
                                f"shorten it: {p[:60]!r}")
        rows.append([marker + added.index(i) if i in added else i for i in row])
    return torch.tensor(rows, dtype=torch.long)


def check_token_encoders(encoder: PromptEncoder, which: str, init_word: str | None = None) -> None:
    """Refuse MinorityPrompt's ``token_encoders`` ``which`` where the model cannot take it (one line); ``init_word``
    (if given) must be one T5 token too when T5 carries the token."""
    if which == "clip":
        return
    if not isinstance(encoder, FlowPromptEncoder):
        raise MinorityError(f"--token-encoders {which} applies to SD3 / FLUX models only (they have a T5 encoder): "
                            "use --token-encoders clip (the default) on SD / SDXL.")
    if encoder.t5_encoder is None:
        raise MinorityError(f"--token-encoders {which} needs the T5 encoder, but this SD3 folder was loaded without "
                            "T5: load a folder with text_encoder_3 / tokenizer_3, or use --token-encoders clip.")
    if init_word:
        word_token_id(encoder.t5_tokenizer, init_word)


def token_layout(encoder: PromptEncoder, prompts: Sequence[str], which: str, num_tokens: int,
                 position: str) -> tuple[list[torch.Tensor], list[torch.Tensor | None], list[tuple], list[str]]:
    """Where MinorityPrompt's token goes (``which`` ``clip`` / ``t5`` / ``both``), in ``encode_ids`` order.

    Returns per encoder (CLIP ..., then T5 if any): ids ``(B, L_k)``, placeholder markers ``(B, n)`` or None (no
    token: the plain prompt), then per learnable encoder its ``(tokenizer, text_encoder)`` and token-file key.
    """
    B, clip_keys = len(prompts), getattr(encoder, "token_keys", None)
    ids, markers, pairs, keys = [], [], [], []
    clip_learn = which in ("clip", "both")
    plain = encoder.tokenize(prompts, warn=False) if not clip_learn else None
    for k, (tok, enc) in enumerate(zip(encoder.tokenizers, encoder.text_encoders)):
        marker = len(tok) + 1000  # outside any vocabulary
        if clip_learn:
            ids.append(insert_placeholders(tok, list(prompts), num_tokens, position, marker))
            markers.append(torch.arange(marker, marker + num_tokens).expand(B, -1))
            pairs.append((tok, enc))
            keys.append(clip_keys[k] if clip_keys else None)
        else:
            ids.append(plain[k])
            markers.append(None)
    fixed = encoder.fixed_ids(prompts)
    if fixed and which in ("t5", "both"):
        tok, marker = encoder.t5_tokenizer, len(encoder.t5_tokenizer) + 1000
        ids.append(t5_placeholder_ids(tok, prompts, num_tokens, position, marker, encoder.max_sequence_length))
        markers.append(torch.arange(marker, marker + num_tokens).expand(B, -1))
        pairs.append((tok, encoder.t5_encoder))
        keys.append("t5")
    else:
        ids += fixed
        markers += [None] * len(fixed)
    return ids, markers, pairs, keys
