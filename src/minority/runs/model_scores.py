"""The model behind ``evaluate``'s ``likelihood`` and ``minority-score`` metrics, loaded through the pipelines.

:class:`PipelineScores` implements :class:`minority.metrics.model_scores.ModelScores` for every model the
pipelines load (name, folder or hub id); :func:`evaluate` is :func:`minority.metrics.evaluate.evaluate` with it,
which is what ``minority evaluate``, the benchmarks and ``minority quality`` call.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from minority.core.conditioning import Conditioning
from minority.errors import MinorityError
from minority.methods.sgms import get_distance, minority_score
from minority.metrics import likelihood as pf_ode
from minority.metrics.cache import state_digest
from minority.metrics.evaluate import evaluate as evaluate_images
from minority.metrics.flow_likelihood import denoiser_velocity, flow_log_likelihood
from minority.metrics.model_scores import LikelihoodFn, MinorityScoreFn
from minority.metrics.text_alignment import row_class
from minority.pipelines.flow_loading import FLOW_FAMILIES
from minority.pipelines.loading import load_components
from minority.pipelines.pixel import PixelPipeline, load_pipeline


class PipelineScores:
    """Likelihood and minority-score functions of a model loaded by :mod:`minority.pipelines`."""

    def likelihood(self, model: str, settings: dict, device: Any) -> tuple[LikelihoodFn, dict]:
        """PF-ODE bits/dim (:func:`minority.metrics.likelihood.likelihood_for_pipeline`) of images in [-1, 1],
        conditioned on each row's prompt (text-to-image) or class (class-conditional pixel models)."""
        comps = load_components(model, device=device)
        s = settings
        if comps.family in FLOW_FAMILIES:
            return self._flow_likelihood(comps, model, s)
        unet = comps.unet
        in_ch = int(getattr(unet.config, "in_channels", 3))
        encoder = comps.prompt_encoder() if comps.text_encoders else None

        def fn(x: torch.Tensor, generators: list, rows: list) -> torch.Tensor:
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
                labels = [row_class(r) for r in rows]
                if any(v is None for v in labels):
                    raise MinorityError("likelihood of a class-conditional model needs each image's class: a "
                                        "class_label in the manifest rows or a prompt that names the class")
                kw["class_labels"] = torch.tensor(labels, device=device)
            return pf_ode.likelihood_for_pipeline(
                x.to(device), unet, comps.scheduler, comps.vae, kw or None, probes=s["likelihood_probes"],
                rtol=s["likelihood_rtol"], atol=s["likelihood_atol"], generators=generators,
                probe=s["likelihood_probe"], dequantize=s["likelihood_dequantize"])

        sched = hashlib.sha1(np.asarray(comps.scheduler.alphas_cumprod, dtype=np.float64).tobytes())
        sched.update(str(getattr(comps.scheduler.config, "prediction_type", "epsilon")).encode())
        return fn, {"model": model, "space": "latent" if comps.vae is not None else "pixel",
                    "bins": None if comps.vae is not None else 256,
                    "weights_digest": state_digest(unet, comps.vae, *comps.text_encoders) + "-" + sched.hexdigest()[:16]}

    @staticmethod
    def _flow_likelihood(comps, model: str, s: dict) -> tuple[LikelihoodFn, dict]:
        """Flow models (SD3 / FLUX): bits/dim in the latent space from the PF-ODE dx/dσ = v̂ (SPEC §3.5,
        :func:`minority.metrics.flow_likelihood.flow_log_likelihood`), conditioned on each row's prompt; FLUX-dev's
        guidance embedding at the model's default guidance."""
        denoiser, encoder = comps.denoiser(), comps.prompt_encoder()
        guidance = float(comps.defaults["guidance"]) if comps.family == "flux-dev" else None

        def fn(x: torch.Tensor, generators: list, rows: list) -> torch.Tensor:
            with torch.no_grad():
                z0 = comps.encode_images((x.to(comps.device) + 1) / 2)
                cond = encoder.encode([str(r.get("prompt", "")) for r in rows])
            if guidance is not None:
                cond.guidance = torch.full((len(rows),), guidance, device=cond.embeds.device)
            out = flow_log_likelihood(denoiser_velocity(denoiser, cond), z0.double().cpu(), generators,
                                      probes=s["likelihood_probes"], probe=s["likelihood_probe"],
                                      rtol=s["likelihood_rtol"], atol=s["likelihood_atol"])
            return pf_ode.bits_per_dim(out.log_likelihood, int(np.prod(z0.shape[1:])))

        return fn, {"model": model, "space": "latent", "bins": None, "ode": "flow (dx/dσ = v)",
                    "guidance": guidance, "weights_digest": state_digest(comps.unet, comps.vae, *comps.text_encoders)}

    def minority_score(self, model: str, settings: dict, device: Any) -> tuple[MinorityScoreFn, dict]:
        """The minority score (:func:`minority.methods.sgms.minority_score`) of each image, resized (bicubic) to
        the model's size; latent models encode it with the VAE and condition on the row's prompt."""
        s = settings
        pipe = load_pipeline(model, device=device)
        c = pipe.components
        pixel = isinstance(pipe, PixelPipeline)
        dname = s["minority_score_distance"] or ("enet-lpips" if pixel else "l2")
        dist = get_distance(dname, latent=not pixel)
        size = int(c.unet.config.sample_size) * c.vae_scale_factor

        def one(image: np.ndarray, generator: torch.Generator, row: dict) -> float:
            a = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()[None] / 255.0  # (1, 3, H, W) in [0, 1]
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
            return float(minority_score(pipe.denoiser, x.to(c.device), cond, [generator],
                                        perturb=s["minority_score_perturb"], distance=dist,
                                        mc_samples=s["minority_score_mc"])[0])

        def fn(images: list, generators: list, rows: list) -> torch.Tensor:
            return torch.tensor([one(a, g, r) for a, g, r in zip(images, generators, rows)], dtype=torch.float64)

        return fn, {"model": str(model), "distance": dname, "perturb": s["minority_score_perturb"],
                    "mc_samples": s["minority_score_mc"]}


def evaluate(*args: Any, **kwargs: Any) -> dict:
    """:func:`minority.metrics.evaluate.evaluate` whose model-backed metrics load models through the pipelines."""
    kwargs.setdefault("model_scores", PipelineScores())
    return evaluate_images(*args, **kwargs)
