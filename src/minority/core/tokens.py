"""Learnable prompt tokens (MinorityPrompt): placeholder ids in the token sequence, their names, their
initial embeddings. The text encoder stays frozen: the placeholder ids are spliced with given vectors inside
the embedding lookup (:class:`minority.core.text.TokenOverride`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from minority.core.rng import randn_per_sample
from minority.core.text import PromptEncoder
from minority.errors import MinorityError


def insert_placeholders(tokenizer, prompts: list[str], num_tokens: int, position: str, marker: int) -> torch.Tensor:
    """Token ids ``(B, model_max_length)`` of ``prompts`` with ``num_tokens`` placeholder ids inserted.

    The placeholder ids are ``marker, marker+1, ...`` (outside the vocabulary; the text encoder's lookup is
    spliced, see :class:`minority.core.text.TokenOverride`). ``position="end"`` puts them right before the
    end-of-text token, ``"start"`` right after the start token — exactly where the tokenizer would put an
    added token written at the end / start of the prompt.
    """
    L = tokenizer.model_max_length
    rows = []
    for p in prompts:
        ids = tokenizer(p, truncation=False).input_ids  # [bos, ..., eos]
        body = ids[1:-1]
        room = L - 2 - num_tokens
        if len(body) > room:
            raise MinorityError(
                f"Prompt too long for the {num_tokens} learnable token(s): remove {len(body) - room} token(s) "
                f"(CLIP takes {L} including start/end and placeholder tokens): {p[:60]!r}"
            )
        slots = list(range(marker, marker + num_tokens))
        body = body + slots if position == "end" else slots + body
        row = [ids[0], *body, ids[-1]]
        rows.append(row + [tokenizer.pad_token_id] * (L - len(row)))
    return torch.tensor(rows, dtype=torch.long)


def placeholder_strings(base: str, seeds: list, batch: int) -> list[str]:
    """Unique placeholder string per image, e.g. ``<minority-42>`` (batch index added if seeds repeat)."""
    seeds = [s if s is not None else b for b, s in enumerate(seeds)] if seeds else list(range(batch))
    dup = len(set(seeds)) != len(seeds)
    stem = base[:-1] if base.endswith(">") else base
    close = ">" if base.endswith(">") else ""
    return [f"{stem}-{s}{f'-{b}' if dup else ''}{close}" for b, s in enumerate(seeds)]


def word_token_id(tokenizer, word: str) -> int:
    """The id of ``word`` if it is a single BPE token, else a clear error listing its tokens."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        toks = tokenizer.convert_ids_to_tokens(ids)
        raise MinorityError(f"init_word {word!r} is not a single token (it is {toks}): choose a one-token word, e.g. 'cool'.")
    return ids[0]


def initial_vectors(encoder: PromptEncoder, init: str, init_word: str, num_tokens: int, batch: int,
                    generators: Sequence[torch.Generator], pairs: Sequence | None = None) -> list[torch.Tensor]:
    """v_T^(0) per encoder ``(B, num_tokens, D_k)``: the embedding of ``init_word`` (``init="word"``), the vocabulary
    mean (``"mean"``), or random (``"random"``: per-sample draws scaled to the embedding table's std). ``pairs``:
    the ``(tokenizer, text_encoder)`` carrying a token (default: the encoder's CLIP ones)."""
    out = []
    for tok, enc in pairs if pairs is not None else zip(encoder.tokenizers, encoder.text_encoders):
        table = enc.get_input_embeddings().weight.detach()
        if init == "word":
            row = table[word_token_id(tok, init_word)]
            v = row.expand(batch, num_tokens, -1).clone()
        elif init == "mean":
            v = table.mean(0).expand(batch, num_tokens, -1).clone()
        else:
            v = randn_per_sample(generators, (num_tokens, table.shape[1]), device=table.device).to(table.dtype)
            v = v * table.float().std().to(table.dtype)
        out.append(v.float())
    return out


def token_embeds(placeholder: str, vectors: Sequence[torch.Tensor],
                 keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """One image's optimised token per encoder ``(num_tokens, D_k)`` keyed as textual-inversion files expect:
    SD: the placeholder string; SDXL and SD3: ``clip_l`` / ``clip_g``; FLUX ``clip_l``; plus ``t5`` when T5 carries
    a token (``keys``, as diffusers' textual-inversion loaders and its advanced FLUX trainer)."""
    vs = [v.detach().cpu().float().contiguous() for v in vectors]
    if keys is not None:
        return dict(zip(keys, vs))
    return {placeholder: vs[0]} if len(vs) == 1 else {"clip_l": vs[0], "clip_g": vs[1]}
