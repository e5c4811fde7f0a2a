"""Sampling defaults per model family (MP §4.1; SPEC §3.1), and their one-line summaries for ``--help``.

A model folder may override them (``minority_defaults`` in ``model_index.json``; the embedded models do).
"""

from __future__ import annotations

from minority.embedded import declared_defaults, embedded_models

FAMILY_DEFAULTS: dict[str, dict[str, float]] = {
    "sd": {"steps": 50, "guidance": 7.5},
    "sdxl": {"steps": 50, "guidance": 5.0},
    "sdxl-lightning": {"steps": 4, "guidance": 1.0},
    "pixel": {"steps": 250, "guidance": 1.0},
    "sd3": {"steps": 28, "guidance": 7.0},  # StableDiffusion3Pipeline's defaults
    "flux-dev": {"steps": 28, "guidance": 3.5},  # FluxPipeline's (guidance embedded, no CFG batch)
    "flux-schnell": {"steps": 4, "guidance": 0.0},  # timestep-distilled: takes no guidance
}


def defaults_summary(key: str) -> str:
    """``"sd 7.5, sdxl 5, ...; fashion-sd 3, ..."``: the default of ``key`` per family, then per embedded model."""
    fam = ", ".join(f"{k} {v[key]:g}" for k, v in FAMILY_DEFAULTS.items())
    own = [(m.name, declared_defaults(m.name).get(key)) for m in embedded_models() if m.kind != "classifier"]
    models = ", ".join(f"{n} {v:g}" for n, v in own if v is not None)
    return fam + (f"; embedded models: {models}" if models else "")
