"""Metrics computed under a diffusion model: ``likelihood`` (PF-ODE bits/dim) and ``minority-score``.

The metrics layer never loads a model itself (it sits beside the pipelines, not above them). A model is reached
through a :class:`ModelScores` object that the caller passes to :func:`minority.metrics.evaluate.evaluate`:
:class:`minority.runs.model_scores.PipelineScores` (what ``minority evaluate`` and the benchmarks use) loads any
model the pipelines can. Without one, ``likelihood`` still runs with a ``likelihood_fn`` setting.

Both metrics are per image; image i's random draws (Hutchinson probes, re-noising) come from a CPU generator
seeded with its manifest seed (SPEC §3.4), so a value does not depend on the batch it was computed in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from minority.errors import MinorityError
from minority.metrics.images import ImageSet

log = logging.getLogger("minority")

# fn(x (B, C, H, W) in [-1, 1], generators, manifest rows) -> bits/dim (B,)
LikelihoodFn = Callable[[torch.Tensor, list, list], torch.Tensor]
# fn(uint8 images [(H, W, 3)], generators, manifest rows) -> minority scores (B,)
MinorityScoreFn = Callable[[list, list, list], torch.Tensor]


class ModelScores(Protocol):
    """Builds the per-image scoring functions of a model (name, folder or hub id)."""

    def likelihood(self, model: str, settings: dict, device: Any) -> tuple[LikelihoodFn, dict]:
        """``(fn, info)``: bits/dim under ``model``; ``info`` is recorded (it must hold ``weights_digest`` for the
        values to be cached)."""

    def minority_score(self, model: str, settings: dict, device: Any) -> tuple[MinorityScoreFn, dict]:
        """``(fn, info)``: the minority score under ``model``; ``info`` is recorded."""


def _manifest_model(gen: ImageSet, setting: str, s: dict) -> str | None:
    model = s[setting] or next((m.get("model") for m in gen.meta if m.get("model")), None)
    return None if model is None else str(model)


def _generators(gen: ImageSet, ids: list[int]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(int(gen.meta[i].get("seed", i))) for i in ids]


def _need_scores(scores: ModelScores | None, metric: str, model: str, alternative: str) -> ModelScores:
    if scores is None:
        raise MinorityError(f"{metric} under the model {model} needs a model loader: call "
                            f"minority.runs.model_scores.evaluate (what `minority evaluate` uses){alternative}")
    return scores


def likelihood_values(run: Any, gen: ImageSet) -> tuple[np.ndarray, dict]:
    """Per-image bits/dim from the ``likelihood_fn`` setting or the model (``likelihood_model``/manifest model)."""
    s = run.s
    fn = s["likelihood_fn"]
    info: dict = {"probes": s["likelihood_probes"], "probe": s["likelihood_probe"], "rtol": s["likelihood_rtol"],
                  "atol": s["likelihood_atol"], "dequantize": s["likelihood_dequantize"]}
    if fn is None:
        model = _manifest_model(gen, "likelihood_model", s)
        if model is None:
            raise MinorityError("likelihood needs a model: pass likelihood_model=ID_OR_DIR (CLI --set "
                                "likelihood_model=DIR) or evaluate a generation folder whose manifest names its model")
        scores = _need_scores(run.model_scores, "likelihood", model, ", or pass likelihood_fn=callable")
        fn, model_info = scores.likelihood(model, s, run.device)
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
            vals[ids] = fn(x, _generators(gen, ids), [gen.meta[i] for i in ids]).detach().double().cpu().numpy()
    if key is not None and np.isfinite(vals).all():
        run.cache.save(key, {"bits_per_dim": vals})
    return vals, info


def _likelihood_cache_key(run: Any, gen: ImageSet, info: dict) -> str | None:
    """Cache key of the per-image likelihoods: model weights digest, solver settings, and each image's content,
    seed (probe draws) and conditioning (prompt / class). None when uncacheable (a user ``likelihood_fn``)."""
    if run.cache is None or "weights_digest" not in info:
        return None
    ident = "likelihood|" + json.dumps({k: v for k, v in info.items() if k != "model"}, sort_keys=True, default=str)
    rows = [json.dumps([m.get("seed", i), m.get("prompt", ""), m.get("class_label")], default=str)
            for i, m in enumerate(gen.meta)]
    return run.cache.key(ident, gen.digests(), extra="\n".join(rows))


def minority_score_values(run: Any, gen: ImageSet) -> tuple[np.ndarray, dict]:
    """Per-image minority score (SGMS's reconstruction loss on the image) under ``minority_score_model`` or the
    manifest's model; image i's draws come from a generator seeded with its seed."""
    model = _manifest_model(gen, "minority_score_model", run.s)
    if model is None:
        raise MinorityError("minority-score needs a model: --set minority_score_model=ID_OR_DIR, or evaluate a "
                            "generation folder whose manifest names its model")
    fn, info = _need_scores(run.model_scores, "minority-score", model, "").minority_score(model, run.s, run.device)
    vals = np.full(len(gen), np.nan)
    for start in range(0, len(gen), run.batch_size):
        ok, arrays = run.load_images(gen, range(start, min(len(gen), start + run.batch_size)))
        if ok:
            vals[ok] = fn(arrays, _generators(gen, ok), [gen.meta[i] for i in ok]).detach().double().cpu().numpy()
    return vals, info
