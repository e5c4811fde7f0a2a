"""Text-image alignment scores (pure functions on embeddings / labels).

* CLIPScore = ``100 · max(cos(image, text), 0)`` per image (Hessel et al.; torchmetrics' scale).
* PickScore = ``logit_scale · cos(image, text)`` with ``logit_scale = exp(model.logit_scale)`` of the
  PickScore CLIP model (Kirstain et al.; what its reference code computes).
* Alignment (toy domain): 1 where the classifier's predicted class is the prompt's class, else 0; the
  metric is the mean. A prompt's class comes from the manifest (``class_label`` / ``label``) or from the
  class names / synonyms it contains (the longest whole-word match wins).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from minority.data.captions import SYNONYMS
from minority.errors import MinorityError
from minority.metrics.arrays import as_pair


def cosine(image_embeds, text_embeds) -> torch.Tensor:
    """Row-wise cosine similarity of ``image_embeds (N, D)`` and ``text_embeds (N, D)`` in float64: ``(N,)``."""
    i, t = as_pair(image_embeds, text_embeds, "image embeddings", "text embeddings")
    if i.shape[0] != t.shape[0]:
        raise MinorityError(f"{i.shape[0]} image embeddings but {t.shape[0]} text embeddings: one prompt per image")
    return ((i / i.norm(dim=1, keepdim=True)) * (t / t.norm(dim=1, keepdim=True))).sum(1)


def clip_score(image_embeds, text_embeds) -> torch.Tensor:
    """CLIPScore per image: ``100 · max(cos, 0)``, float64 ``(N,)``."""
    return 100.0 * cosine(image_embeds, text_embeds).clamp_min(0.0)


def pick_score(image_embeds, text_embeds, logit_scale: float) -> torch.Tensor:
    """PickScore per image: ``logit_scale · cos`` (``logit_scale`` already exponentiated), float64 ``(N,)``."""
    return float(logit_scale) * cosine(image_embeds, text_embeds)


def class_agreement(predicted: Sequence[int] | torch.Tensor, target: Sequence[int | None] | torch.Tensor) -> torch.Tensor:
    """1.0 where ``predicted[i] == target[i]``, else 0.0 (float64 ``(N,)``); targets of ``None``/-1 are NaN."""
    p = torch.as_tensor(predicted, dtype=torch.int64).reshape(-1)
    t = torch.as_tensor([-1 if v is None else int(v) for v in target], dtype=torch.int64)
    if p.shape != t.shape:
        raise MinorityError(f"alignment: {p.numel()} predictions for {t.numel()} prompts")
    out = (p == t).to(torch.float64)
    out[t < 0] = float("nan")
    return out


def prompt_class(prompt: str, class_synonyms: Sequence[Sequence[str]]) -> int | None:
    """The class whose name/synonym occurs in ``prompt`` (case-insensitive whole words; longest match wins).

    Returns ``None`` when no class is named.
    """
    text = prompt.lower()
    best, best_len = None, 0
    for label, words in enumerate(class_synonyms):
        for w in words:
            w = w.lower().strip()
            if w and len(w) > best_len and re.search(r"(?<![\w-])" + re.escape(w) + r"(?![\w-])", text):
                best, best_len = label, len(w)
    return best


def fashion_synonyms() -> list[list[str]]:
    """Per Fashion-MNIST class, the nouns that name it in prompts (:data:`minority.data.captions.SYNONYMS`)."""
    return [[noun for noun, _ in group] for group in SYNONYMS]


def row_class(row: dict, synonyms: Sequence[Sequence[str]] | None = None) -> int | None:
    """The class of a manifest row: its ``class_label``/``label``/``class`` integer, else the class its prompt names
    (``synonyms`` per class; default: the Fashion-MNIST classes)."""
    label = next((row[k] for k in ("class_label", "label", "class") if isinstance(row.get(k), int)), None)
    if label is None:
        label = prompt_class(str(row.get("prompt", "")), fashion_synonyms() if synonyms is None else synonyms)
    return label
