"""The metrics ``evaluate`` knows (what each needs, how it is reported) and the evaluation settings."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass

from minority.errors import MinorityError


@dataclass(frozen=True)
class MetricInfo:
    """What a metric needs and how it is reported."""

    description: str
    needs_reference: bool = False
    needs_prompts: bool = False
    higher_is_better: bool | None = True


METRICS: dict[str, MetricInfo] = {
    "precision": MetricInfo("improved precision (k=pr_k)", needs_reference=True),
    "recall": MetricInfo("improved recall (k=pr_k)", needs_reference=True),
    "density": MetricInfo("density (k=dc_k)", needs_reference=True),
    "coverage": MetricInfo("coverage (k=dc_k)", needs_reference=True),
    "fd": MetricInfo("Fréchet distance of pooled features (cFID conventions)", needs_reference=True, higher_is_better=False),
    "sfid": MetricInfo("Fréchet distance of spatial features (sFID)", needs_reference=True, higher_is_better=False),
    "kid": MetricInfo("kernel distance, unbiased MMD² (KID)", needs_reference=True, higher_is_better=False),
    "avgknn": MetricInfo("mean distance to the avgknn_k nearest reference features", needs_reference=True, higher_is_better=None),
    "lof": MetricInfo("local outlier factor (k=lof_k)", needs_reference=True, higher_is_better=None),
    "rarity": MetricInfo("rarity score (k=rarity_k), over samples inside a reference ball", needs_reference=True,
                         higher_is_better=None),
    "clipscore": MetricInfo("100·max(cos,0) of CLIP image/prompt embeddings", needs_prompts=True),
    "pickscore": MetricInfo("logit_scale·cos of PickScore embeddings", needs_prompts=True),
    "imagereward": MetricInfo("ImageReward-v1.0", needs_prompts=True),
    "alignment": MetricInfo("share of images classified as the prompt's class", needs_prompts=True),
    "ibs": MetricInfo("in-batch cosine similarity per prompt group", needs_prompts=True, higher_is_better=False),
    "likelihood": MetricInfo("PF-ODE bits/dim under the model", higher_is_better=None),
    "png-bpp": MetricInfo("PNG-compressed size in bits per pixel (image detail, the likelihood confound)",
                          higher_is_better=None),
    "minority-score": MetricInfo("reconstruction-loss minority score under the model (Um & Ye 2023)",
                                 higher_is_better=None),
}
DEFAULT_METRICS: tuple[str, ...] = ("precision", "recall", "density", "coverage", "fd")
FEATURE_METRICS = ("precision", "recall", "density", "coverage", "fd", "sfid", "kid", "avgknn", "lof", "rarity")

DEFAULT_SETTINGS: dict = {
    "pr_k": 3,
    "dc_k": 5,
    "avgknn_k": 5,
    "lof_k": 20,
    "rarity_k": 3,
    "minority_k": 5,
    "kid_subsets": 100,
    "kid_subset_size": 1000,
    "kid_seed": 0,
    "weights": None,
    "clip_weights": None,
    "pickscore_weights": None,
    "ibs_features": None,
    "ibs_weights": None,
    "classifier": "fashion-classifier",
    "classifier_weights": None,
    "imagereward_weights": None,
    "minority_score_model": None,
    "minority_score_perturb": 0.8,
    "minority_score_mc": 4,
    "minority_score_distance": None,
    "likelihood_fn": None,
    "likelihood_model": None,
    "likelihood_probes": 1,
    "likelihood_probe": "rademacher",
    "likelihood_rtol": 1e-5,
    "likelihood_atol": 1e-5,
    "likelihood_dequantize": False,
    "data_dir": None,
    "cache": True,
    "cache_dir": None,
    "progress": True,
}


def parse_metrics(metrics: str | Sequence[str] | None) -> list[str]:
    """Metric names from a list or a comma-separated string (``"all"`` = every metric), validated."""
    if metrics is None:
        return list(DEFAULT_METRICS)
    items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names = [m.strip().lower() for m in items if m and m.strip()]
    if names == ["all"]:
        return list(METRICS)
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise MinorityError(f"unknown metric(s) {', '.join(unknown)}: choose from {', '.join(METRICS)}")
    if not names:
        raise MinorityError("no metrics requested: pass e.g. --metrics precision,recall")
    return list(dict.fromkeys(names))


def check_settings(settings: dict) -> dict:
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise MinorityError(f"unknown evaluate setting(s) {', '.join(unknown)}: valid are {', '.join(DEFAULT_SETTINGS)}")
    s = {**DEFAULT_SETTINGS, **settings}
    for key in ("pr_k", "dc_k", "avgknn_k", "lof_k", "rarity_k", "minority_k", "kid_subsets", "kid_subset_size",
                "likelihood_probes", "minority_score_mc"):
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 1:
            raise MinorityError(f"setting {key} must be a positive integer, got {s[key]!r}")
    return s


def key_value(text: str) -> tuple[str, object]:
    """argparse type for ``KEY=VALUE`` options: the value is parsed as JSON when it can be, else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip().replace("-", "_"), parsed
