"""k-nearest-neighbour geometry of feature sets and the density-based minority scores built on it.

* :func:`pairwise_distances`, :func:`knn` — Euclidean distances in float64, chunked over query rows so
  that large sets never materialise an ``(N, M)`` matrix bigger than ``max_elements``.
* :func:`avgknn` — AvgkNN (SGMS): mean distance of each generated feature to its ``k = 5`` nearest real
  features.
* :func:`lof` — Local Outlier Factor (Breunig et al.) of generated features w.r.t. the real set, ``k = 20``,
  exactly as scikit-learn's ``LocalOutlierFactor(novelty=True)`` (``-score_samples``).
* :func:`rarity` — Rarity Score (Han et al. 2022): the smallest k-NN radius among the real samples whose
  ball contains the generated feature; 0 outside every ball (``outside`` flags those samples).

All "k-NN radii" of a set exclude the sample itself (the radius of real sample i is the distance to its
k-th nearest *other* real sample).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import NamedTuple

import torch

from minority.metrics.arrays import as_features, as_pair, check_k

DEFAULT_MAX_ELEMENTS = 1 << 24  # distance-matrix entries per chunk (128 MiB in float64)


def pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``(Na, Nb)`` between rows of float64 ``a (Na, D)`` and ``b (Nb, D)``.

    Uses ``|a|^2 + |b|^2 - 2 a.b`` in float64 (like scikit-learn), clamped at 0 before the square root.
    """
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_min_(0.0).sqrt_()


def iter_distance_chunks(
    query: torch.Tensor, ref: torch.Tensor, same: bool = False, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, D)`` with ``D = pairwise_distances(query[start:start+c], ref)`` chunk by chunk.

    With ``same=True`` (``query`` is ``ref``) the self-distances ``D[i, start + i]`` are set to ``+inf``
    so that neighbours exclude the sample itself.
    """
    rows = max(1, int(max_elements) // max(1, ref.shape[0]))
    for start in range(0, query.shape[0], rows):
        d = pairwise_distances(query[start : start + rows], ref)
        if same:
            idx = torch.arange(d.shape[0], device=d.device)
            d[idx, idx + start] = float("inf")
        yield start, d


class Neighbours(NamedTuple):
    """k nearest neighbours: ``distances (N, k)`` float64 ascending and ``indices (N, k)`` into the reference."""

    distances: torch.Tensor
    indices: torch.Tensor


def knn(query, ref=None, k: int = 5, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Neighbours:
    """The ``k`` nearest rows of ``ref (M, D)`` for each row of ``query (N, D)``.

    With ``ref=None`` the neighbours are searched in ``query`` itself, excluding each sample.
    """
    same = ref is None
    q = as_features(query, "query features")
    r = q if same else as_features(ref, "reference features").to(q.device)
    check_k(r.shape[0], k, "reference samples", "k-NN search", "k", within=same)
    dists, idxs = [], []
    for _, d in iter_distance_chunks(q, r, same=same, max_elements=max_elements):
        v, i = torch.topk(d, k, dim=1, largest=False, sorted=True)
        dists.append(v)
        idxs.append(i)
    return Neighbours(torch.cat(dists), torch.cat(idxs))


_SELF_KNN: OrderedDict[tuple, Neighbours] = OrderedDict()
SELF_KNN_MEMO = 2  # reference sets remembered (one benchmark evaluates many arms against the same reference)
SELF_KNN_MIN_ROWS = 5000  # smaller sets are cheap: not remembered


def self_knn(x: torch.Tensor, k: int, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Neighbours:
    """``knn(x, None, k)``, remembered for large ``x`` (by content) so that LOF, Rarity and AvgkNN of many
    generated sets against one reference compute the reference's O(N²) neighbour search once; a request for
    fewer neighbours than remembered is served from the first k columns (neighbours are sorted)."""
    if x.shape[0] < SELF_KNN_MIN_ROWS:
        return knn(x, None, k, max_elements)
    t = x.detach().cpu().contiguous()
    digest = hashlib.sha1(t.view(torch.uint8).reshape(-1).numpy().tobytes()).hexdigest()
    key = (digest, tuple(t.shape), str(t.dtype))
    hit = _SELF_KNN.get(key)
    if hit is None or hit.distances.shape[1] < k:
        hit = knn(x, None, k, max_elements)
        _SELF_KNN[key] = hit
        while len(_SELF_KNN) > SELF_KNN_MEMO:
            _SELF_KNN.popitem(last=False)
    _SELF_KNN.move_to_end(key)
    return Neighbours(hit.distances[:, :k], hit.indices[:, :k])


def knn_radii(x, k: int, max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """Distance of each row of ``x (N, D)`` to its k-th nearest other row: float64 ``(N,)``."""
    x = as_features(x)
    check_k(x.shape[0], k, "samples", "k-NN radius", "k")
    return self_knn(x, k, max_elements).distances[:, k - 1]


def avgknn(real, fake, k: int = 5, max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """AvgkNN of generated features: mean distance to the ``k`` nearest real features.

    Args:
        real: reference features ``(Nr, D)``; fake: generated features ``(Nf, D)``.
    Returns:
        float64 ``(Nf,)``; higher = lower density = more "minority".
    """
    r, f = as_pair(real, fake)
    check_k(r.shape[0], k, "reference images", "avgknn", "avgknn_k", within=False)
    return knn(f, r, k, max_elements).distances.mean(1)


def avgknn_self(x, k: int = 5, max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """AvgkNN of each row of ``x (N, D)`` within its own set (excluding itself): float64 ``(N,)``.

    Used to pick the most unique real samples (SGMS' minority reference).
    """
    x = as_features(x, "reference features")
    check_k(x.shape[0], k, "reference images", "avgknn", "minority_k")
    return self_knn(x, k, max_elements).distances.mean(1)


def lof(real, fake, k: int = 20, max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """Local Outlier Factor of generated features w.r.t. the real set (novelty mode).

    Equal to ``-LocalOutlierFactor(n_neighbors=k, novelty=True).fit(real).score_samples(fake)``:
    ``lrd(p) = 1 / (mean_{o in N_k(p)} max(kdist(o), d(p, o)) + 1e-10)``, ``LOF(q) = mean_{o in N_k(q)}
    lrd(o) / lrd(q)``, where neighbours of real points exclude the point itself.

    Returns:
        float64 ``(Nf,)``; ~1 for inliers, larger for outliers.
    """
    r, f = as_pair(real, fake)
    check_k(r.shape[0], k, "reference images", "lof", "lof_k")
    nr = self_knn(r, k, max_elements)
    kdist = nr.distances[:, k - 1]
    lrd_real = 1.0 / (torch.maximum(nr.distances, kdist[nr.indices]).mean(1) + 1e-10)
    nf = knn(f, r, k, max_elements)
    lrd_fake = 1.0 / (torch.maximum(nf.distances, kdist[nf.indices]).mean(1) + 1e-10)
    return (lrd_real[nf.indices] / lrd_fake[:, None]).mean(1)


class Rarity(NamedTuple):
    """Rarity Score per generated sample: ``scores (Nf,)`` float64 (0 outside all balls), ``outside (Nf,)`` bool."""

    scores: torch.Tensor
    outside: torch.Tensor


def rarity(real, fake, k: int = 3, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Rarity:
    """Rarity Score (Han et al. 2022) of generated features.

    The real k-NN ball of sample i has radius ``r_i`` = distance to its k-th nearest other real sample; a
    generated feature g lies in ball i when ``d(i, g) < r_i``. Its score is ``min r_i`` over the balls that
    contain it (a large ball = a sparse, rare region), and 0 when no ball contains it.
    """
    r, f = as_pair(real, fake)
    check_k(r.shape[0], k, "reference images", "rarity", "rarity_k")
    radii = knn_radii(r, k, max_elements)
    scores = torch.empty(f.shape[0], dtype=torch.float64, device=f.device)
    for start, d in iter_distance_chunks(f, r, max_elements=max_elements):
        inside = d < radii[None, :]
        masked = torch.where(inside, radii[None, :].expand_as(d), torch.full_like(d, float("inf")))
        scores[start : start + d.shape[0]] = masked.min(1).values
    outside = torch.isinf(scores)
    return Rarity(torch.where(outside, torch.zeros_like(scores), scores), outside)
