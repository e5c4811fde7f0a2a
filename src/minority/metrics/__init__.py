"""Evaluation suite: feature extractors, pure metric functions (float64) and ``evaluate``.

Pure functions on features ``(N, D)`` (numpy or torch):

* :func:`precision_recall`, :func:`density_coverage`, :func:`prdc`, :func:`manifold_scores` (P/R/D/C);
* :func:`frechet_distance`, :func:`frechet_distance_from_stats`, :func:`feature_stats`, :func:`kid`,
  :func:`mmd2_unbiased` (FD for cFID/sFID, KID);
* :func:`avgknn`, :func:`lof`, :func:`rarity` (minority / low-density scores);
* :func:`in_batch_similarity` (IBS);
* :func:`clip_score`, :func:`pick_score`, :func:`class_agreement`, :func:`prompt_class` (alignment);
* :func:`pf_ode_bits_per_dim`, :func:`pf_ode_log_likelihood`, :func:`likelihood_for_pipeline` (likelihood).

Feature extraction: :func:`load_extractor`, :func:`register_extractor`, :func:`extract_features`;
references: :func:`open_reference`, :func:`register_dataset`, :func:`select_minority`; the whole
pipeline: :func:`evaluate` (CLI: ``minority evaluate``, see :mod:`minority.metrics.cli`).
"""

from minority.metrics.cache import FeatureCache
from minority.metrics.diversity import group_similarity, in_batch_similarity
from minority.metrics.evaluate import (
    DEFAULT_METRICS,
    DEFAULT_SETTINGS,
    METRICS,
    evaluate,
    format_table,
    write_reports,
)
from minority.metrics.features import (
    FeatureExtractor,
    extract_features,
    list_extractors,
    load_extractor,
    register_extractor,
)
from minority.metrics.frechet import (
    feature_stats,
    frechet_distance,
    frechet_distance_from_stats,
    kid,
    mmd2_unbiased,
)
from minority.metrics.images import ImageSet, array_image_set, clean_resize, open_image_folder
from minority.metrics.knn import avgknn, knn, knn_radii, lof, rarity
from minority.metrics.likelihood import (
    continuous_alpha_bar,
    likelihood_for_pipeline,
    pf_ode_bits_per_dim,
    pf_ode_log_likelihood,
)
from minority.metrics.prdc import density_coverage, manifold_scores, prdc, precision_recall
from minority.metrics.references import open_reference, register_dataset, select_minority
from minority.metrics.stats import summarize
from minority.metrics.text_alignment import class_agreement, clip_score, pick_score, prompt_class

__all__ = [
    "DEFAULT_METRICS",
    "DEFAULT_SETTINGS",
    "METRICS",
    "FeatureCache",
    "FeatureExtractor",
    "ImageSet",
    "array_image_set",
    "avgknn",
    "class_agreement",
    "clean_resize",
    "clip_score",
    "continuous_alpha_bar",
    "density_coverage",
    "evaluate",
    "extract_features",
    "feature_stats",
    "format_table",
    "frechet_distance",
    "frechet_distance_from_stats",
    "group_similarity",
    "in_batch_similarity",
    "kid",
    "knn",
    "knn_radii",
    "likelihood_for_pipeline",
    "list_extractors",
    "load_extractor",
    "lof",
    "manifold_scores",
    "mmd2_unbiased",
    "open_image_folder",
    "open_reference",
    "pf_ode_bits_per_dim",
    "pf_ode_log_likelihood",
    "pick_score",
    "prdc",
    "precision_recall",
    "prompt_class",
    "rarity",
    "register_dataset",
    "register_extractor",
    "select_minority",
    "summarize",
    "write_reports",
]
