"""Module paths of release 0.1, kept importable for one release (they warn; use the new paths).

0.1 kept 30 modules at the package's top level; 0.2 groups them by layer. ``import minority.sampling`` still
works and returns :mod:`minority.core.sampling` (the same module object, so monkeypatching keeps working).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "minority.conditioning": "minority.core.conditioning",
    "minority.rng": "minority.core.rng",
    "minority.schedules": "minority.core.schedules",
    "minority.sampling": "minority.core.sampling",
    "minority.text": "minority.core.text",
    "minority.models": "minority.pipelines.loading",
    "minority.cads": "minority.methods.cads",
    "minority.sgms": "minority.methods.sgms",
    "minority.prompt_opt": "minority.methods.minority_prompt",
    "minority.pipeline": "minority.pipelines.text2image",
    "minority.pixel": "minority.pipelines.pixel",
    "minority.tiny": "minority.pipelines.tiny",
    "minority.clip_vocab": "minority.pipelines.clip_vocab",
    "minority.generate": "minority.runs.generate",
    "minority.manifest": "minority.runs.manifest",
    "minority.io": "minority.runs.io",
    "minority.resume": "minority.runs.resume",
    "minority.sharding": "minority.runs.sharding",
    "minority.launch": "minority.runs.launch",
    "minority.distributed": "minority.runs.distributed",
    "minority.signals": "minority.runs.signals",
    "minority.progress": "minority.runs.progress",
    "minority.prompts": "minority.runs.prompts",
    "minority.seeds": "minority.runs.seeds",
    "minority.grid": "minority.runs.grid",
    "minority.demo": "minority.runs.demo",
    "minority.score": "minority.runs.score",
    "minority.report": "minority.benchmark.report",
    "minority.training.registry": "minority.embedded",
    "minority.training.classifier": "minority.nets.fashion_classifier",
    "minority.metrics.cli": "minority.cli.evaluate",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path to the new module (with a DeprecationWarning)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new} (the old path goes away in the next release).",
                      DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        pass


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
