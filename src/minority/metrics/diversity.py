"""In-batch similarity (IBS, MP Tab. 3): mean off-diagonal cosine similarity within prompt groups.

For the images of one prompt with features ``F (n, D)`` (the paper uses DINO ViT-B/8), IBS of the group is
the mean of ``cos(F_i, F_j)`` over ordered pairs ``i != j``; the reported value is the mean over groups
with at least two images. 1 = identical images, lower = more diverse.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import NamedTuple

from minority.errors import MinorityError
from minority.metrics.arrays import as_features


def group_similarity(features) -> float:
    """Mean pairwise (off-diagonal) cosine similarity of the rows of ``features (n, D)``, n >= 2."""
    f = as_features(features)
    n = f.shape[0]
    if n < 2:
        raise MinorityError(f"in-batch similarity needs at least 2 images in a group, got {n}")
    norms = f.norm(dim=1, keepdim=True)
    if (norms == 0).any():
        raise MinorityError("in-batch similarity: a feature vector is all zeros, its cosine is undefined")
    u = f / norms
    s = u @ u.T
    return float((s.sum() - s.diagonal().sum()) / (n * (n - 1)))


class IBS(NamedTuple):
    """Mean IBS over groups, and per group ``{group: (ibs, n_images)}`` (groups of one image left out)."""

    mean: float
    per_group: dict


def in_batch_similarity(features, groups: Sequence[Hashable]) -> IBS:
    """IBS of ``features (N, D)`` with one group label per row (e.g. the prompt index)."""
    f = as_features(features)
    if len(groups) != f.shape[0]:
        raise MinorityError(f"in-batch similarity: {len(groups)} group labels for {f.shape[0]} feature rows")
    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    per_group = {g: (group_similarity(f[idx]), len(idx)) for g, idx in members.items() if len(idx) >= 2}
    if not per_group:
        raise MinorityError(
            "in-batch similarity needs at least 2 images of the same prompt: generate with --images-per-prompt >= 2"
        )
    mean = sum(v for v, _ in per_group.values()) / len(per_group)
    return IBS(float(mean), per_group)
