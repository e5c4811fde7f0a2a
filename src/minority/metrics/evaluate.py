"""``evaluate``: compute the requested metrics of an image folder against a reference and write reports.

Flow: open the generated set (and its manifest) -> check that every metric has what it needs (reference,
prompts, models) -> extract features once per extractor and image set (cached on disk) -> pure metric
functions in float64 -> ``metrics.json`` (values, 95% CIs of per-image metrics, settings, extractors,
counts) and ``per_image.csv``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from minority.errors import MinorityError
from minority.metrics.cache import FeatureCache
from minority.metrics.catalog import (  # noqa: F401  (DEFAULT_*, METRICS, parse_metrics: re-exported)
    DEFAULT_METRICS,
    DEFAULT_SETTINGS,
    FEATURE_METRICS,
    METRICS,
    check_settings,
    parse_metrics,
)
from minority.metrics.compression import png_bits_per_pixel
from minority.metrics.diversity import in_batch_similarity
from minority.metrics.extractors.imagereward import load_imagereward
from minority.metrics.features import FeatureExtractor, extract_features, load_extractor
from minority.metrics.frechet import frechet_distance, kid
from minority.metrics.images import BadImageError, ImageSet, open_image_folder
from minority.metrics.knn import avgknn, avgknn_self, lof, rarity
from minority.metrics.model_scores import ModelScores, likelihood_values, minority_score_values
from minority.metrics.prdc import manifold_scores
from minority.metrics.references import open_reference, top_fraction
from minority.metrics.results import (  # noqa: F401  (output_paths, write_reports, format_table: re-exported)
    build_result,
    format_table,
    output_paths,
    write_reports,
)
from minority.metrics.stats import summarize
from minority.metrics.text_alignment import class_agreement, clip_score, pick_score, row_class

log = logging.getLogger("minority")


class _Run:
    """State of one evaluation: image sets, validity masks, loaded extractors and extracted outputs."""

    def __init__(self, device, batch_size: int, skip_bad: bool, settings: dict,
                 model_scores: ModelScores | None = None) -> None:
        self.device = device
        self.model_scores = model_scores
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
    model_scores: ModelScores | None = None,
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
        model_scores: how ``likelihood`` and ``minority-score`` reach a model
            (:class:`minority.runs.model_scores.PipelineScores`; ``minority.runs.model_scores.evaluate`` passes it).
        **settings: see ``DEFAULT_SETTINGS`` (k values, KID subsets, model choices and weights, likelihood
            options, cache).
    Returns:
        ``{"metrics": {name: {"value", "ci95", "std", "n", ...}}, "settings", "extractors", "counts",
        "per_image": [rows]}``.
    """
    s = check_settings(settings)
    names = parse_metrics(metrics)
    gen = open_image_folder(images_dir)
    ref_set, ref_spec = _check_inputs(names, gen, reference, s)  # before any slow work
    run = _Run(device, batch_size, skip_bad, s, model_scores)
    per_image: dict[str, np.ndarray] = {}
    extra: dict[str, dict] = {}
    _pixel_metrics(run, gen, names, per_image, extra)                    # 1. metrics that read pixels themselves
    feats, main = _all_features(run, gen, ref_set, names, features)      # 2. features, once per extractor
    valid = run.mask(gen)                                                # 3. metric maths on the valid rows
    idx = np.flatnonzero(valid)
    results: dict[str, dict] = {}
    if "main" in feats:
        extra["reference"] = _reference_metrics(run, names, feats, idx, ref_set, ref_spec, reference, main,
                                                results, per_image)
    _prompt_metrics(run, gen, names, feats, idx, results, per_image, extra)
    _summaries(gen, names, idx, results, per_image, extra)
    result = build_result(gen, names, results, per_image, idx, valid, run, main, reference, s, extra,
                          dict(device=str(device), batch_size=batch_size, skip_bad=skip_bad))
    if out is not None:
        write_reports(result, out)
    return result


def _check_inputs(names: list[str], gen: ImageSet, reference: str | None, s: dict):
    """Every metric has what it needs (prompts, a reference); the opened reference ``(set, spec)`` or Nones."""
    for m in names:
        if METRICS[m].needs_prompts:
            gen.require_manifest("prompts" if m != "ibs" else "prompt groups", m)
    need_ref = [m for m in names if METRICS[m].needs_reference]
    if need_ref and reference is None:
        raise MinorityError(f"{', '.join(need_ref)} need a reference: pass --reference DIR or fashion-mnist:train|test")
    if any(m in FEATURE_METRICS for m in names):
        return open_reference(reference, s["data_dir"])
    return None, None


def _pixel_metrics(run: _Run, gen: ImageSet, names: list[str], per_image: dict, extra: dict) -> None:
    if "imagereward" in names:
        per_image["imagereward"] = _imagereward(run, gen)
    if "likelihood" in names:
        per_image["likelihood_bpd"], extra["likelihood"] = likelihood_values(run, gen)
    if "minority-score" in names:
        per_image["minority_score"], extra["minority-score"] = minority_score_values(run, gen)
    if "png-bpp" in names:
        per_image["png_bpp"] = _png_bpp(run, gen)


def _all_features(run: _Run, gen: ImageSet, ref_set: ImageSet | None, names: list[str], features):
    """``({"main", "ref", "ibs", "clip", "pick", "cls"}: extracted outputs, main extractor)`` as the metrics need."""
    s = run.s
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
        feats["ibs"] = run.features(gen, run.extractor(spec, s["ibs_weights"] if s["ibs_features"] else s["weights"]),
                                    "ibs")
    if "clipscore" in names:
        feats["clip"] = run.features(gen, run.extractor("clip-vit-l14", s["clip_weights"]), "clipscore")
    if "pickscore" in names:
        feats["pick"] = run.features(gen, run.extractor("pickscore", s["pickscore_weights"]), "pickscore")
    if "alignment" in names:
        feats["cls"] = run.features(gen, run.extractor(s["classifier"], s["classifier_weights"]), "alignment")
    return feats, main


def _reference_metrics(run: _Run, names, feats, idx, ref_set, ref_spec, reference, main, results, per_image) -> dict:
    """The metrics against the reference features (restricted to its minority fraction when asked); returns what
    the report records about the reference."""
    s = run.s
    g = feats["main"]["features"][idx]
    rvalid = run.mask(ref_set)
    ref_rows = np.flatnonzero(rvalid)
    r = feats["ref"]["features"][ref_rows]
    minority = ref_spec.minority
    if minority is not None:
        keep = top_fraction(_reference_avgknn(run, ref_set, main, r, ref_rows, s["minority_k"]), minority)
        ref_rows, r = ref_rows[keep], r[keep]
    _feature_metrics(names, s, g, r, feats, idx, ref_rows, results, per_image)
    return {"spec": str(reference), "images": int(len(ref_set)), "used": int(len(ref_rows)),
            "skipped": [ref_set.keys[i] for i in np.flatnonzero(~rvalid)],
            "minority_fraction": minority, "minority_k": s["minority_k"] if minority else None}


def _prompt_metrics(run: _Run, gen: ImageSet, names, feats, idx, results, per_image, extra) -> None:
    s = run.s
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


def _summaries(gen: ImageSet, names, idx, results, per_image, extra) -> None:
    """Per-image values restricted to the valid rows, and their means with 95% CIs."""
    for name in ("imagereward", "likelihood_bpd", "minority_score", "png_bpp"):
        if name in per_image and len(per_image[name]) == len(gen):
            per_image[name] = per_image[name][idx]
    for name in ("clipscore", "pickscore", "imagereward", "alignment"):
        if name in per_image:
            results[name] = _summary_entry(per_image[name])
    if "likelihood" in names:
        results["likelihood"] = {**_summary_entry(per_image["likelihood_bpd"]), "unit": "bits/dim",
                                 **extra["likelihood"]}
    if "minority-score" in names:
        results["minority-score"] = {**_summary_entry(per_image["minority_score"]), **extra["minority-score"]}
    if "png-bpp" in names:
        results["png-bpp"] = {**_summary_entry(per_image["png_bpp"]), "unit": "bits/pixel"}
        if "likelihood_bpd" in per_image:  # Spearman's ρ between detail and NLL over the images
            ok = np.isfinite(per_image["png_bpp"]) & np.isfinite(per_image["likelihood_bpd"])
            rho, p = spearmanr(per_image["png_bpp"][ok], per_image["likelihood_bpd"][ok]) if ok.sum() > 2 else (None, None)
            results["png-bpp"].update(spearman_likelihood=None if rho is None or not np.isfinite(rho) else float(rho),
                                      spearman_p=None if p is None or not np.isfinite(p) else float(p))


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


def _alignment(ext: FeatureExtractor, logits: np.ndarray, rows: list[dict]):
    pred = logits.argmax(1)
    synonyms = ext.class_synonyms or [[n] for n in ext.class_names or ()]
    targets = [row_class(row, synonyms) for row in rows]
    if all(t is None for t in targets):
        raise MinorityError(
            f"alignment: no prompt names a class of {ext.name} ({', '.join(ext.class_names or [])}) and the manifest "
            "has no class_label: use prompts that name the class or drop alignment"
        )
    agree = class_agreement(pred, targets).numpy()
    return agree, pred.astype(np.float64), np.array([np.nan if t is None else t for t in targets], np.float64)


def _png_bpp(run: _Run, gen: ImageSet) -> np.ndarray:
    vals = np.full(len(gen), np.nan)
    for start in range(0, len(gen), run.batch_size):
        ok, arrays = run.load_images(gen, range(start, min(len(gen), start + run.batch_size)))
        vals[ok] = [png_bits_per_pixel(a) for a in arrays]
    return vals


def _imagereward(run: _Run, gen: ImageSet) -> np.ndarray:
    scorer = load_imagereward(run.s["imagereward_weights"], run.device)
    vals = np.full(len(gen), np.nan)
    for start in range(0, len(gen), run.batch_size):
        ok, arrays = run.load_images(gen, range(start, min(len(gen), start + run.batch_size)))
        if ok:
            vals[ok] = scorer.score([gen.meta[i].get("prompt", "") for i in ok], arrays).numpy()
    return vals


