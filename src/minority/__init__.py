"""minority: minority-focused sampling for diffusion models.

MinorityPrompt (Um & Ye, CVPR 2025) and SGMS (Um & Ye, ECCV 2024) on diffusers models, with the
baselines (DDIM, null-prompt, CADS, CFG++) and the papers' evaluation suite.

The public names below are imported on first use (``import minority`` does not load torch, so that the
command line starts fast); old module paths of release 0.1 still import, with a DeprecationWarning
(:mod:`minority._deprecated`).
"""

from __future__ import annotations

import importlib
from typing import Any

from minority import _deprecated
from minority.errors import MinorityError

__version__ = "0.2.0.dev0"

_PUBLIC = {
    "Components": "minority.pipelines.components",
    "Denoiser": "minority.core.denoiser",
    "MinorityOutput": "minority.pipelines.run",
    "MinorityPipeline": "minority.pipelines.text2image",
    "MinorityPromptPipeline": "minority.pipelines.text2image",
    "PixelPipeline": "minority.pipelines.pixel",
    "load_pipeline": "minority.pipelines.pixel",
    "load_components": "minority.pipelines.loading",
    "METHODS": "minority.methods",
    "Method": "minority.methods",
    "all_methods": "minority.methods",
    "get_method": "minority.methods",
    "make_method": "minority.methods",
    "register_method": "minority.methods",
}

__all__ = ["MinorityError", "__version__", *_PUBLIC]

_deprecated.install()


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'minority' has no attribute {name!r}")
