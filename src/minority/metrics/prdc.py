"""Improved precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020).

Definitions (k-NN radii exclude the sample itself; "in a ball" is a strict ``<`` as in the ``prdc``
package):

* precision = share of generated samples inside at least one real k-NN ball;
* recall    = share of real samples inside at least one generated k-NN ball;
* density   = (1/k) · mean over generated samples of the number of real balls containing them;
* coverage  = share of real samples whose nearest generated sample lies inside their own ball.

The project uses k = 3 for precision/recall and k = 5 for density/coverage (SPEC §4). Per-image values
(``fake_in_real``, ``fake_density``) let callers report confidence intervals of precision and density.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from minority.metrics.arrays import as_pair, check_k
from minority.metrics.knn import DEFAULT_MAX_ELEMENTS, iter_distance_chunks, knn_radii


class ManifoldScores(NamedTuple):
    """All four scores for one ``k`` plus their per-sample ingredients.

    Attributes:
        precision, recall, density, coverage: Python floats.
        fake_in_real: ``(Nf,)`` float64, 1 where a generated sample lies in some real ball.
        fake_density: ``(Nf,)`` float64, number of real balls containing the sample divided by k.
        real_in_fake: ``(Nr,)`` float64, 1 where a real sample lies in some generated ball.
        real_covered: ``(Nr,)`` float64, 1 where the nearest generated sample is inside the real ball.
    """

    precision: float
    recall: float
    density: float
    coverage: float
    fake_in_real: torch.Tensor
    fake_density: torch.Tensor
    real_in_fake: torch.Tensor
    real_covered: torch.Tensor


def manifold_scores(real, fake, k: int, max_elements: int = DEFAULT_MAX_ELEMENTS) -> ManifoldScores:
    """Precision, recall, density and coverage of ``fake (Nf, D)`` against ``real (Nr, D)`` for one ``k``.

    Equal to ``prdc.compute_prdc(real, fake, nearest_k=k)``, computed in float64 in chunks.
    """
    r, f = as_pair(real, fake)
    check_k(r.shape[0], k, "reference images", "precision/density", "k (pr_k / dc_k)")
    check_k(f.shape[0], k, "generated images", "recall", "k (pr_k / dc_k)")
    r_real = knn_radii(r, k, max_elements)
    r_fake = knn_radii(f, k, max_elements)
    counts = torch.empty(f.shape[0], dtype=torch.float64, device=f.device)
    real_in_fake = torch.zeros(r.shape[0], dtype=torch.bool, device=r.device)
    nearest_fake = torch.full((r.shape[0],), float("inf"), dtype=torch.float64, device=r.device)
    for start, d in iter_distance_chunks(f, r, max_elements=max_elements):  # d: (chunk of fakes, Nr)
        counts[start : start + d.shape[0]] = (d < r_real[None, :]).sum(1).to(torch.float64)
        real_in_fake |= (d < r_fake[start : start + d.shape[0], None]).any(0)
        nearest_fake = torch.minimum(nearest_fake, d.min(0).values)
    fake_in_real = (counts > 0).to(torch.float64)
    fake_density = counts / float(k)
    real_covered = (nearest_fake < r_real).to(torch.float64)
    rif = real_in_fake.to(torch.float64)
    return ManifoldScores(
        precision=float(fake_in_real.mean()),
        recall=float(rif.mean()),
        density=float(fake_density.mean()),
        coverage=float(real_covered.mean()),
        fake_in_real=fake_in_real,
        fake_density=fake_density,
        real_in_fake=rif,
        real_covered=real_covered,
    )


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al.) with ``k`` (default 3)."""
    s = manifold_scores(real, fake, k)
    return s.precision, s.recall


def density_coverage(real, fake, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al.) with ``k`` (default 5)."""
    s = manifold_scores(real, fake, k)
    return s.density, s.coverage


def prdc(real, fake, pr_k: int = 3, dc_k: int = 5) -> dict[str, float]:
    """``{"precision", "recall", "density", "coverage"}``: P/R with ``pr_k``, D/C with ``dc_k``."""
    p, r = precision_recall(real, fake, pr_k)
    d, c = density_coverage(real, fake, dc_k)
    return {"precision": p, "recall": r, "density": d, "coverage": c}
