"""``evaluate``: compute the requested metrics of an image folder against a reference and write reports.

Flow: open the generated set (and its manifest) -> check that every metric has what it needs (reference,
prompts, models) -> extract features once per extractor and image set (cached on disk) -> pure metric
functions in float64 -> ``metrics.json`` (values, 95% CIs of per-image metrics, settings, extractors,
counts) and ``per_image.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from minority.errors import MinorityError
from minority.metrics.cache import FeatureCache, state_digest
from minority.metrics.diversity import in_batch_similarity
from minority.metrics.features import FeatureExtractor, extract_features, load_extractor
from minority.metrics.frechet import frechet_distance, kid
from minority.metrics.images import BadImageError, ImageSet, open_image_folder
from minority.metrics.knn import avgknn, avgknn_self, lof, rarity
from minority.metrics.prdc import manifold_scores
from minority.metrics.references import open_reference, top_fraction
from minority.metrics.stats import summarize
from minority.metrics.text_alignment import class_agreement, clip_score, pick_score, prompt_class

log = logging.getLogger("minority")


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


def _check_settings(settings: dict) -> dict:
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise MinorityError(f"unknown evaluate setting(s) {', '.join(unknown)}: valid are {', '.join(DEFAULT_SETTINGS)}")
    s = {**DEFAULT_SETTINGS, **settings}
    for key in ("pr_k", "dc_k", "avgknn_k", "lof_k", "rarity_k", "minority_k", "kid_subsets", "kid_subset_size",
                "likelihood_probes", "minority_score_mc"):
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 1:
            raise MinorityError(f"setting {key} must be a positive integer, got {s[key]!r}")
    return s


class _Run:
    """State of one evaluation: image sets, validity masks, loaded extractors and extracted outputs."""

    def __init__(self, device, batch_size: int, skip_bad: bool, settings: dict) -> None:
        self.device = device
        self.batch_size = int(batch_size)
        self.skip_bad = skip_bad
        self.s = settings
        self.cache = FeatureCache(settings["cache_dir"]) if settings["cache"] else None
        self.extractors: dict[tuple, FeatureExtractor] = {}
        self.valid: dict[int, np.ndarray] = {}

    def extractor(self, spec, weights=None) -> FeatureExtractor:
        key = (spec if isinstance(spec, str) else id(spec), str(weights))
        if key not in self.extractors:
            self.extractors[key] = load_extractor(spec, self.device, weights)
        return self.extractors[key]

    def features(self, iset: ImageSet, ext: FeatureExtractor, what: str) -> dict[str, np.ndarray]:
        out = extract_features(iset, ext, self.batch_size, self.device, self.skip_bad, self.cache,
                               self.s["progress"], desc=f"{what}: {ext.name}")
        self.mark(iset, out["valid"])
        return out

    def mark(self, iset: ImageSet, valid: np.ndarray) -> None:
        self.valid[id(iset)] = self.valid.get(id(iset), np.ones(len(iset), bool)) & valid

    def mask(self, iset: ImageSet) -> np.ndarray:
        return self.valid.get(id(iset), np.ones(len(iset), bool))

    def load_images(self, iset: ImageSet, indices) -> tuple[list[int], list[np.ndarray]]:
        """Decode images, skipping (and marking) unreadable ones when ``skip_bad``."""
        ok, arrays = [], []
        bad = np.ones(len(iset), bool)
        for i in indices:
            try:
                arrays.append(iset.load(i))
                ok.append(i)
            except BadImageError as exc:
                if not self.skip_bad:
                    raise
                log.warning("skipping %s", exc)
                bad[i] = False
        self.mark(iset, bad)
        return ok, arrays


def evaluate(
    images_dir: str | Path,
    reference: str | None = None,
    metrics: str | Sequence[str] | None = DEFAULT_METRICS,
    features: str | torch.nn.Module = "efficientnet-lite0",
    out: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    skip_bad: bool = False,
    **settings,
) -> dict:
    """Evaluate the images of ``images_dir`` (see the module docstring and ``docs/metrics.md``).

    Args:
        images_dir: image folder or ``minority generate`` output folder (manifest gives prompts and groups).
        reference: reference spec (folder, ``fashion-mnist:train|test``, ``...:minority=F``); needed by
            precision, recall, density, coverage, fd, sfid, kid, avgknn, lof and rarity.
        metrics: names or a comma-separated string (``"all"`` for every metric).
        features: extractor name (``efficientnet-lite0``, ``inception``, ``resnet50``, ``dino-vitb8``,
            ``clip-vit-l14``, ``fashion-classifier``, or a registered one) or a module.
        out: path of ``metrics.json`` (``per_image.csv`` is written beside it) or a folder; None = no files.
        device, batch_size: where and how many images per forward pass.
        skip_bad: leave unreadable images out (listed in ``counts.skipped``) instead of raising.
        **settings: see ``DEFAULT_SETTINGS`` (k values, KID subsets, model choices and weights, likelihood
            options, cache).
    Returns:
        ``{"metrics": {name: {"value", "ci95", "std", "n", ...}}, "settings", "extractors", "counts",
        "per_image": [rows]}``.
    """
    s = _check_settings(settings)
    names = parse_metrics(metrics)
    gen = open_image_folder(images_dir)
    for m in names:
        if METRICS[m].needs_prompts:
            gen.require_manifest("prompts" if m != "ibs" else "prompt groups", m)
    need_ref = [m for m in names if METRICS[m].needs_reference]
    if need_ref and reference is None:
        raise MinorityError(f"{', '.join(need_ref)} need a reference: pass --reference DIR or fashion-mnist:train|test")
    ref_set = ref_spec = None
    if any(m in FEATURE_METRICS for m in names):
        ref_set, ref_spec = open_reference(reference, s["data_dir"])  # validate before any slow work
    run = _Run(device, batch_size, skip_bad, s)
    per_image: dict[str, np.ndarray] = {}
    extra: dict[str, dict] = {}

    # 1. metrics that read pixels themselves
    if "imagereward" in names:
        per_image["imagereward"] = _imagereward(run, gen)
    if "likelihood" in names:
        per_image["likelihood_bpd"], extra["likelihood"] = _likelihood(run, gen)
    if "minority-score" in names:
        per_image["minority_score"], extra["minority-score"] = _minority_score(run, gen)

    # 2. features
    feats: dict[str, dict] = {}
    main = None
    if ref_set is not None:
        main = run.extractor(features, s["weights"])
        feats["main"] = run.features(gen, main, "generated")
        feats["ref"] = run.features(ref_set, main, "reference")
        if "sfid" in names and "spatial" not in feats["main"]:
            raise MinorityError(f"sfid needs spatial features, which {main.name} does not provide: use --features "
                                "efficientnet-lite0, inception or resnet50")
    if "ibs" in names:
        spec = s["ibs_features"] or features
        feats["ibs"] = run.features(gen, run.extractor(spec, s["ibs_weights"] if s["ibs_features"] else s["weights"]), "ibs")
    if "clipscore" in names:
        feats["clip"] = run.features(gen, run.extractor("clip-vit-l14", s["clip_weights"]), "clipscore")
    if "pickscore" in names:
        feats["pick"] = run.features(gen, run.extractor("pickscore", s["pickscore_weights"]), "pickscore")
    if "alignment" in names:
        feats["cls"] = run.features(gen, run.extractor(s["classifier"], s["classifier_weights"]), "alignment")

    # 3. final validity and metric maths on valid rows
    valid = run.mask(gen)
    idx = np.flatnonzero(valid)
    results: dict[str, dict] = {}
    if "main" in feats:
        g = feats["main"]["features"][idx]
        rvalid = run.mask(ref_set)
        ref_rows = np.flatnonzero(rvalid)
        r = feats["ref"]["features"][ref_rows]
        minority = ref_spec.minority
        if minority is not None:
            keep = top_fraction(_reference_avgknn(run, ref_set, main, r, ref_rows, s["minority_k"]), minority)
            ref_rows, r = ref_rows[keep], r[keep]
        extra["reference"] = {"spec": str(reference), "images": int(len(ref_set)), "used": int(len(ref_rows)),
                              "skipped": [ref_set.keys[i] for i in np.flatnonzero(~rvalid)],
                              "minority_fraction": minority, "minority_k": s["minority_k"] if minority else None}
        _feature_metrics(names, s, g, r, feats, idx, ref_rows, results, per_image)
    prompts = [gen.meta[i].get("prompt", "") for i in idx] if gen.has_manifest else None
    if "clipscore" in names:
        ext = run.extractor("clip-vit-l14", s["clip_weights"])
        per_image["clipscore"] = clip_score(feats["clip"]["features"][idx], _text_embeds(ext, prompts)).numpy()
    if "pickscore" in names:
        ext = run.extractor("pickscore", s["pickscore_weights"])
        per_image["pickscore"] = pick_score(feats["pick"]["features"][idx], _text_embeds(ext, prompts),
                                            ext.logit_scale).numpy()
    if "alignment" in names:
        ext = run.extractor(s["classifier"], s["classifier_weights"])
        per_image["alignment"], per_image["predicted_class"], per_image["prompt_class"] = _alignment(
            ext, feats["cls"]["logits"][idx], [gen.meta[i] for i in idx])
        if ext.class_names:
            extra["alignment"] = {"class_names": list(ext.class_names)}
    if "ibs" in names:
        all_groups = gen.groups()
        groups = [all_groups[i] for i in idx]
        ibs = in_batch_similarity(feats["ibs"]["features"][idx], groups)
        vals = [v for v, _ in ibs.per_group.values()]
        results["ibs"] = _summary_entry(vals, value=ibs.mean)
        results["ibs"]["groups"] = len(vals)
        results["ibs"]["per_group"] = {str(k): {"ibs": v, "images": n} for k, (v, n) in ibs.per_group.items()}
    for name in ("imagereward", "likelihood_bpd", "minority_score"):
        if name in per_image and len(per_image[name]) == len(gen):
            per_image[name] = per_image[name][idx]
    for name in ("clipscore", "pickscore", "imagereward", "alignment"):
        if name in per_image:
            results[name] = _summary_entry(per_image[name])
    if "likelihood" in names:
        results["likelihood"] = {**_summary_entry(per_image["likelihood_bpd"]), "unit": "bits/dim", **extra["likelihood"]}
    if "minority-score" in names:
        results["minority-score"] = {**_summary_entry(per_image["minority_score"]), **extra["minority-score"]}

    result = _report(gen, names, results, per_image, idx, valid, run, main, reference, s, extra,
                     dict(device=str(device), batch_size=batch_size, skip_bad=skip_bad))
    if out is not None:
        write_reports(result, out)
    return result


def _reference_avgknn(run: _Run, ref_set: ImageSet, ext: FeatureExtractor, r: np.ndarray, rows: np.ndarray,
                      k: int) -> np.ndarray:
    """AvgkNN of each (valid) reference feature within the reference set, cached beside its features."""
    key = None
    if run.cache is not None:
        extra = f"avgknn-self:k={k}:rows={hashlib.sha1(rows.astype(np.int64).tobytes()).hexdigest()}"
        key = run.cache.key(ext.cache_id(), ref_set.digests(), extra)
        hit = run.cache.load(key)
        if hit is not None:
            return hit["scores"]
    scores = avgknn_self(r, k).cpu().numpy()
    if key is not None:
        run.cache.save(key, {"scores": scores})
    return scores


def _feature_metrics(names, s, g, r, feats, idx, ref_rows, results, per_image) -> None:
    if {"precision", "recall"} & set(names):
        pr = manifold_scores(r, g, s["pr_k"])
        per_image["precision"] = pr.fake_in_real.numpy()
        if "precision" in names:
            results["precision"] = {**_summary_entry(per_image["precision"]), "k": s["pr_k"]}
        if "recall" in names:
            results["recall"] = {"value": pr.recall, "ci95": None, "n": int(len(r)), "k": s["pr_k"]}
    if {"density", "coverage"} & set(names):
        dc = manifold_scores(r, g, s["dc_k"])
        per_image["density"] = dc.fake_density.numpy()
        if "density" in names:
            results["density"] = {**_summary_entry(per_image["density"]), "k": s["dc_k"]}
        if "coverage" in names:
            results["coverage"] = {"value": dc.coverage, "ci95": None, "n": int(len(r)), "k": s["dc_k"]}
    if "fd" in names:
        results["fd"] = {"value": frechet_distance(r, g), "ci95": None, "n": int(len(g)), "n_reference": int(len(r))}
    if "sfid" in names:
        rs, gs = feats["ref"]["spatial"][ref_rows], feats["main"]["spatial"][idx]
        results["sfid"] = {"value": frechet_distance(rs, gs), "ci95": None, "n": int(len(gs)), "dim": int(gs.shape[1])}
    if "kid" in names:
        k = kid(r, g, s["kid_subsets"], s["kid_subset_size"], seed=s["kid_seed"])
        results["kid"] = {"value": k.mean, "std": k.std, "ci95": None, "n": int(len(g)), "subsets": k.subsets,
                          "subset_size": k.subset_size}
    if "avgknn" in names:
        per_image["avgknn"] = avgknn(r, g, s["avgknn_k"]).numpy()
        results["avgknn"] = {**_summary_entry(per_image["avgknn"]), "k": s["avgknn_k"]}
    if "lof" in names:
        per_image["lof"] = lof(r, g, s["lof_k"]).numpy()
        results["lof"] = {**_summary_entry(per_image["lof"]), "k": s["lof_k"]}
    if "rarity" in names:
        rr = rarity(r, g, s["rarity_k"])
        per_image["rarity"] = rr.scores.numpy()
        per_image["rarity_outside"] = rr.outside.numpy().astype(np.float64)
        inside = rr.scores[~rr.outside].numpy()
        results["rarity"] = {**_summary_entry(inside), "k": s["rarity_k"],
                             "outside_fraction": float(rr.outside.double().mean())}


def _summary_entry(values, value: float | None = None) -> dict:
    sm = summarize(values)
    return {"value": sm.mean if value is None else value, "ci95": list(sm.ci95) if sm.ci95 else None,
            "std": sm.std, "n": sm.n}


def _text_embeds(ext, prompts: list[str]) -> torch.Tensor:
    unique = list(dict.fromkeys(prompts))
    rows = []
    with torch.no_grad():
        for start in range(0, len(unique), 64):
            rows.append(ext.text_embeds(unique[start : start + 64]).detach().double().cpu())
    table = torch.cat(rows)
    pos = {p: i for i, p in enumerate(unique)}
    return table[[pos[p] for p in prompts]]


def _row_class(row: dict, synonyms) -> int | None:
    """The class of a manifest row: its ``class_label``/``label``/``class`` integer, else the class its prompt names."""
    label = next((row[k] for k in ("class_label", "label", "class") if isinstance(row.get(k), int)), None)
    if label is None and synonyms is not None:
        label = prompt_class(str(row.get("prompt", "")), synonyms)
    return label


def _fashion_synonyms():
    try:
        from minority.data.captions import SYNONYMS
    except ImportError:
        return None
    return [[noun for noun, _ in group] for group in SYNONYMS]


def _alignment(ext: FeatureExtractor, logits: np.ndarray, rows: list[dict]):
    pred = logits.argmax(1)
    synonyms = ext.class_synonyms or ([[n] for n in ext.class_names] if ext.class_names else None)
    targets = [_row_class(row, synonyms) for row in rows]
    if all(t is None for t in targets):
        raise MinorityError(
            f"alignment: no prompt names a class of {ext.name} ({', '.join(ext.class_names or [])}) and the manifest "
            "has no class_label: use prompts that name the class or drop alignment"
        )
    agree = class_agreement(pred, targets).numpy()
    return agree, pred.astype(np.float64), np.array([np.nan if t is None else t for t in targets], np.float64)


def _imagereward(run: _Run, gen: ImageSet) -> np.ndarray:
    from minority.metrics.extractors.imagereward import load_imagereward

    scorer = load_imagereward(run.s["imagereward_weights"], run.device)
    vals = np.full(len(gen), np.nan)
    for start in range(0, len(gen), run.batch_size):
        ok, arrays = run.load_images(gen, range(start, min(len(gen), start + run.batch_size)))
        if ok:
            vals[ok] = scorer.score([gen.meta[i].get("prompt", "") for i in ok], arrays).numpy()
    return vals


def _likelihood(run: _Run, gen: ImageSet) -> tuple[np.ndarray, dict]:
    """Per-image bits/dim from ``likelihood_fn`` or a diffusers model (``likelihood_model``/manifest model)."""
    from minority.metrics.likelihood import likelihood_for_pipeline

    s = run.s
    fn = s["likelihood_fn"]
    info: dict = {"probes": s["likelihood_probes"], "probe": s["likelihood_probe"], "rtol": s["likelihood_rtol"],
                  "atol": s["likelihood_atol"], "dequantize": s["likelihood_dequantize"]}
    if fn is None:
        model = s["likelihood_model"] or next((m.get("model") for m in gen.meta if m.get("model")), None)
        if model is None:
            raise MinorityError("likelihood needs a model: pass likelihood_model=ID_OR_DIR (CLI --set "
                                "likelihood_model=DIR) or evaluate a generation folder whose manifest names its model")
        fn, model_info = _pipeline_likelihood_fn(str(model), run, likelihood_for_pipeline)
        info.update(model_info)
    else:
        info["model"] = getattr(fn, "__name__", "likelihood_fn")
    key = _likelihood_cache_key(run, gen, info)
    hit = run.cache.load(key) if key is not None else None
    if hit is not None and hit.get("bits_per_dim", np.empty(0)).shape == (len(gen),):
        log.info("likelihood: reusing cached values for %d images", len(gen))
        return hit["bits_per_dim"].astype(np.float64), {**info, "cached": True}
    vals = np.full(len(gen), np.nan)
    for start in range(0, len(gen), run.batch_size):
        ok, arrays = run.load_images(gen, range(start, min(len(gen), start + run.batch_size)))
        by_size: dict[tuple, list[int]] = {}
        for j, a in enumerate(arrays):
            by_size.setdefault(a.shape, []).append(j)
        for members in by_size.values():
            ids = [ok[j] for j in members]
            x = torch.from_numpy(np.stack([arrays[j] for j in members])).permute(0, 3, 1, 2).float() / 127.5 - 1
            gens = [torch.Generator("cpu").manual_seed(int(gen.meta[i].get("seed", i))) for i in ids]
            vals[ids] = fn(x, gens, [gen.meta[i] for i in ids]).detach().double().cpu().numpy()
    if key is not None and np.isfinite(vals).all():
        run.cache.save(key, {"bits_per_dim": vals})
    return vals, info


def _likelihood_cache_key(run: _Run, gen: ImageSet, info: dict) -> str | None:
    """Cache key of the per-image likelihoods: model weights digest, solver settings, and each image's content,
    seed (probe draws) and conditioning (prompt / class). None when uncacheable (a user ``likelihood_fn``)."""
    if run.cache is None or "weights_digest" not in info:
        return None
    ident = "likelihood|" + json.dumps({k: v for k, v in info.items() if k != "model"}, sort_keys=True, default=str)
    rows = [json.dumps([m.get("seed", i), m.get("prompt", ""), m.get("class_label")], default=str)
            for i, m in enumerate(gen.meta)]
    return run.cache.key(ident, gen.digests(), extra="\n".join(rows))


def _minority_score(run: _Run, gen: ImageSet) -> tuple[np.ndarray, dict]:
    """Per-image minority score (:func:`minority.methods.sgms.minority_score`) under ``minority_score_model`` or the
    manifest's model; each image's draws come from a generator seeded with its seed."""
    from minority.core.conditioning import Conditioning
    from minority.methods.sgms import get_distance, minority_score
    from minority.pipelines.pixel import PixelPipeline, load_pipeline

    s = run.s
    model = s["minority_score_model"] or next((m.get("model") for m in gen.meta if m.get("model")), None)
    if model is None:
        raise MinorityError("minority-score needs a model: --set minority_score_model=ID_OR_DIR, or evaluate a "
                            "generation folder whose manifest names its model")
    pipe = load_pipeline(str(model), device=run.device)
    c = pipe.components
    pixel = isinstance(pipe, PixelPipeline)
    dname = s["minority_score_distance"] or ("enet-lpips" if pixel else "l2")
    dist = get_distance(dname, latent=not pixel)
    vals = np.full(len(gen), np.nan)
    for start in range(0, len(gen), run.batch_size):
        ok, arrays = run.load_images(gen, range(start, min(len(gen), start + run.batch_size)))
        for j, i in enumerate(ok):
            a = torch.from_numpy(np.array(arrays[j])).permute(2, 0, 1).float()[None] / 255.0  # (1, 3, H, W) in [0, 1]
            row = gen.meta[i]
            size = int(c.unet.config.sample_size) * c.vae_scale_factor
            a = torch.nn.functional.interpolate(a, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
            if pixel:
                x = a * 2 - 1
                if int(c.unet.config.in_channels) == 1:
                    x = x.mean(1, keepdim=True)
                labels = pipe.labels_tensor([row.get("class_label")]) if pipe.num_classes else None
                cond = Conditioning(class_labels=labels)
            else:
                with torch.no_grad():
                    x = c.encode_images(a.to(c.device))
                cond, _ = pipe.prepare([str(row.get("prompt") or "")], None, 1.0, "ddim", size, size)
            g = [torch.Generator("cpu").manual_seed(int(row.get("seed", i)))]
            vals[i] = float(minority_score(pipe.denoiser, x.to(c.device), cond, g, perturb=s["minority_score_perturb"],
                                           distance=dist, mc_samples=s["minority_score_mc"])[0])
    return vals, {"model": str(model), "distance": dname, "perturb": s["minority_score_perturb"],
                  "mc_samples": s["minority_score_mc"]}


def _pipeline_likelihood_fn(model: str, run: _Run, likelihood_for_pipeline):
    """Wrap a diffusers model loaded by :func:`minority.pipelines.loading.load_components` into a likelihood function."""
    try:
        from minority.pipelines.loading import load_components
    except ImportError as exc:
        raise MinorityError("likelihood with a model id needs minority.pipelines.loading; pass likelihood_fn=callable instead") from exc
    comps = load_components(model, device=run.device)
    s = run.s
    unet = comps.unet
    in_ch = int(getattr(unet.config, "in_channels", 3))
    encoder = comps.prompt_encoder() if comps.text_encoders else None

    def fn(x: torch.Tensor, generators, rows) -> torch.Tensor:
        if comps.vae is None and in_ch == 1 and x.shape[1] == 3:
            x = x.mean(1, keepdim=True)
        kw: dict = {}
        if encoder is not None:
            with torch.no_grad():
                cond = encoder.encode([str(r.get("prompt", "")) for r in rows])
            kw["encoder_hidden_states"] = cond.embeds
            if cond.pooled is not None:
                kw["added_cond_kwargs"] = {"text_embeds": cond.pooled, "time_ids": cond.time_ids}
        elif getattr(unet.config, "num_class_embeds", None):
            labels = [_row_class(r, _fashion_synonyms()) for r in rows]
            if any(v is None for v in labels):
                raise MinorityError("likelihood of a class-conditional model needs each image's class: a class_label "
                                    "in the manifest rows or a prompt that names the class")
            kw["class_labels"] = torch.tensor(labels, device=run.device)
        return likelihood_for_pipeline(
            x.to(run.device), unet, comps.scheduler, comps.vae, kw or None, probes=s["likelihood_probes"],
            rtol=s["likelihood_rtol"], atol=s["likelihood_atol"], generators=generators, probe=s["likelihood_probe"],
            dequantize=s["likelihood_dequantize"])

    sched = hashlib.sha1(np.asarray(comps.scheduler.alphas_cumprod, dtype=np.float64).tobytes())
    sched.update(str(getattr(comps.scheduler.config, "prediction_type", "epsilon")).encode())
    return fn, {"model": model, "space": "latent" if comps.vae is not None else "pixel",
                "bins": None if comps.vae is not None else 256,
                "weights_digest": state_digest(unet, comps.vae, *comps.text_encoders) + "-" + sched.hexdigest()[:16]}


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.integer, int, bool, str)) or v is None:
        return v.item() if isinstance(v, np.generic) else v
    if isinstance(v, Path):
        return str(v)
    return getattr(v, "__name__", None) or type(v).__name__


def _report(gen, names, results, per_image, idx, valid, run, main, reference, s, extra, run_args) -> dict:
    rows = []
    for j, i in enumerate(idx):
        m = gen.meta[i]
        row = {"file": gen.keys[i], "prompt": m.get("prompt", ""), "prompt_index": m.get("prompt_index", ""),
               "seed": m.get("seed", "")}
        for col, vals in per_image.items():
            row[col] = float(vals[j])
        rows.append(row)
    extractors = {}
    for (_spec, weights), ext in run.extractors.items():
        extractors[ext.name] = {**ext.describe(), "weights": None if weights == "None" else weights}
    main_name = main.name if main is not None else None
    return {
        "images": gen.name,
        "reference": None if reference is None else str(reference),
        "metrics": {m: results[m] for m in names if m in results},
        "settings": _jsonable({**s, **run_args, "features": main_name}),
        "extractor": main_name,
        "extractors": _jsonable(extractors),
        "counts": {"images": int(valid.sum()), "images_total": len(gen),
                   "skipped": [gen.keys[i] for i in np.flatnonzero(~valid)],
                   **({"reference": extra["reference"]["used"], "reference_total": extra["reference"]["images"]}
                      if "reference" in extra else {})},
        "reference_info": _jsonable(extra.get("reference")),
        "per_image": rows,
    }


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """``(metrics.json path, per_image.csv path)`` for ``out`` (a ``.json`` file or a folder)."""
    out = Path(out).expanduser()
    if out.suffix.lower() == ".json":
        csv_path = out.with_name("per_image.csv") if out.name == "metrics.json" else out.with_name(out.stem + "_per_image.csv")
        return out, csv_path
    return out / "metrics.json", out / "per_image.csv"


def write_reports(result: dict, out: str | Path) -> tuple[Path, Path]:
    """Write ``metrics.json`` (everything but the per-image rows) and ``per_image.csv``."""
    json_path, csv_path = output_paths(out)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    body = {k: v for k, v in result.items() if k != "per_image"}
    json_path.write_text(json.dumps(_jsonable(body), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    rows = result["per_image"]
    cols = list(dict.fromkeys(c for r in rows for c in r)) if rows else ["file"]
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
    return json_path, csv_path


def format_table(result: dict) -> str:
    """A readable table of the metric values (value, 95% CI, n)."""
    lines = [f"{'metric':<12} {'value':>12}  {'95% CI':<27} {'n':>7}  note"]
    lines.append("-" * len(lines[0]))
    for name, r in result["metrics"].items():
        v = r.get("value")
        ci = r.get("ci95")
        ci_s = f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
        note = METRICS[name].description
        if name == "rarity":
            note += f"; outside {r['outside_fraction']:.1%}"
        if name == "kid":
            note += f"; std {r['std']:.3g}"
        v_s = f"{v:.5g}" if isinstance(v, float) and math.isfinite(v) else str(v)
        lines.append(f"{name:<12} {v_s:>12}  {ci_s:<27} {r.get('n', ''):>7}  {note}")
    c = result["counts"]
    tail = f"{c['images']} images"
    if c.get("skipped"):
        tail += f" ({len(c['skipped'])} skipped)"
    if "reference" in c:
        tail += f"; reference {c['reference']} of {c['reference_total']}"
    if result.get("extractor"):
        tail += f"; features {result['extractor']}"
    lines.append(tail)
    return "\n".join(lines)
