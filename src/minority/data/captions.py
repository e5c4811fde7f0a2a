"""Text captions for Fashion-MNIST classes (training data for the text-to-image model).

A caption is a template filled with a class synonym, e.g. "a photo of a sneaker", "a sneaker",
"sneaker on a dark background". A share of captions is empty so that the model also learns the
unconditional branch used by classifier-free guidance. Generation is deterministic per seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from minority.errors import MinorityError

CLASS_NAMES: tuple[str, ...] = (
    "t-shirt",
    "trousers",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)

# (bare noun, noun phrase with article). The first entry is the canonical name of the class.
SYNONYMS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("t-shirt", "a t-shirt"), ("tee", "a tee"), ("top", "a top"), ("tee shirt", "a tee shirt")),
    (("trousers", "a pair of trousers"), ("pants", "a pair of pants"), ("jeans", "a pair of jeans"),
     ("slacks", "a pair of slacks")),
    (("pullover", "a pullover"), ("sweater", "a sweater"), ("jumper", "a jumper"), ("sweatshirt", "a sweatshirt")),
    (("dress", "a dress"), ("gown", "a gown"), ("summer dress", "a summer dress")),
    (("coat", "a coat"), ("jacket", "a jacket"), ("overcoat", "an overcoat"), ("parka", "a parka")),
    (("sandal", "a sandal"), ("sandals", "a pair of sandals"), ("flip-flop", "a flip-flop")),
    (("shirt", "a shirt"), ("blouse", "a blouse"), ("button-up shirt", "a button-up shirt")),
    (("sneaker", "a sneaker"), ("trainer", "a trainer"), ("running shoe", "a running shoe"),
     ("sports shoe", "a sports shoe")),
    (("bag", "a bag"), ("handbag", "a handbag"), ("purse", "a purse"), ("tote bag", "a tote bag")),
    (("ankle boot", "an ankle boot"), ("boot", "a boot"), ("bootie", "a bootie"), ("short boot", "a short boot")),
)

# "{a}" = noun phrase with article, "{n}" = bare noun.
TEMPLATES: tuple[str, ...] = (
    "a photo of {a}",
    "{a}",
    "{n}",
    "{n} on a dark background",
    "a grayscale photo of {a}",
    "a picture of {a}",
    "an image of {a}",
    "a small photo of {a}",
    "a low resolution photo of {a}",
    "a product photo of {a}",
    "{a} on a black background",
    "a centered photo of {a}",
)

DEFAULT_EMPTY_FRACTION = 0.1


def _fill(template: str, label: int, synonym: int) -> str:
    n, a = SYNONYMS[label][synonym]
    return template.format(n=n, a=a)


def caption_for(label: int, rng: np.random.Generator) -> str:
    """One random caption (template × synonym, uniformly) for class ``label`` in ``0..9``."""
    if not 0 <= int(label) < len(CLASS_NAMES):
        raise MinorityError(f"Fashion-MNIST label {label} is outside 0..9")
    synonyms = SYNONYMS[int(label)]
    return _fill(TEMPLATES[rng.integers(len(TEMPLATES))], int(label), int(rng.integers(len(synonyms))))


def make_captions(
    labels: Sequence[int] | np.ndarray,
    seed: int,
    empty_fraction: float = DEFAULT_EMPTY_FRACTION,
) -> list[str]:
    """Captions for ``labels (N,)``: deterministic for a given ``seed``; a ``empty_fraction`` share is ``""``.

    Each caption is independently empty with probability ``empty_fraction`` (for classifier-free
    guidance), otherwise :func:`caption_for` of its label.
    """
    if not 0.0 <= empty_fraction <= 1.0:
        raise MinorityError(f"empty_fraction must be in [0, 1], got {empty_fraction}")
    rng = np.random.default_rng(int(seed))
    out = []
    for label in np.asarray(labels, dtype=np.int64).reshape(-1):
        drop = rng.random() < empty_fraction
        text = caption_for(int(label), rng)  # always drawn so the stream does not depend on drops
        out.append("" if drop else text)
    return out


def all_captions(label: int | None = None) -> list[str]:
    """Every distinct non-empty caption (of one class, or of all classes), in a fixed order."""
    labels = range(len(CLASS_NAMES)) if label is None else [int(label)]
    return [_fill(t, lab, s) for lab in labels for s in range(len(SYNONYMS[lab])) for t in TEMPLATES]


def class_prompts(template: str = "a photo of {a}") -> list[str]:
    """The canonical prompt of each class, e.g. ``"a photo of a sneaker"`` (index = label)."""
    return [_fill(template, lab, 0) for lab in range(len(CLASS_NAMES))]
