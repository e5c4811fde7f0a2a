"""Every image stays the same: `minority generate` for every method on fashion-sd, fashion-ddpm, a tiny
v-prediction SD model and a tiny SDXL model, compared with PNGs recorded before the redesign (issue 14).

Recorded with ``python tests/test_reference_images.py --record`` at one thread (``--record --only sgms``
re-records only the cases whose name contains ``sgms``); a case passes when every
pixel is within one 8-bit level of the recording.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE = Path(__file__).parent / "reference" / "images.npz"

_SD = ["--model", "fashion-sd", "--steps", "6", "--seeds", "0-1", "--batch-size", "4",
       "a photo of a sneaker", "a photo of a dress"]
_PIXEL = ["--model", "fashion-ddpm", "--steps", "8", "--seeds", "0-1", "--class-label", "3", "--class-label", "7"]
_TINY = ["--steps", "5", "--seeds", "0-1", "a photo of a cat", "a red car"]

# name -> (model key, extra argv)
CASES: dict[str, tuple[str, list[str]]] = {
    "sd-ddim": ("", _SD + ["--method", "ddim"]),
    "sd-null-prompt": ("", _SD + ["--method", "null-prompt"]),
    "sd-cads": ("", _SD + ["--method", "cads"]),
    "sd-cads-both": ("", _SD + ["--method", "cads", "--both-branches", "--no-rescale", "--noise-scale", "0.5"]),
    "sd-cfgpp": ("", _SD + ["--method", "cfgpp"]),
    "sd-sgms": ("", _SD + ["--method", "sgms"]),
    "sd-sgms-fixed": ("", _SD + ["--method", "sgms", "--schedule", "fixed", "--normalize", "l2", "--mc-samples", "2",
                                 "--guide-every", "2", "--scale", "0.3"]),
    "sd-mp": ("", _SD + ["--method", "minority-prompt", "--opt-every", "2"]),
    "sd-mp-eq6": ("", _SD + ["--method", "minority-prompt", "--opt-every", "2", "--tweedie-cfg", "--stop-grad-second",
                             "--cv-in-second"]),
    "sd-mp-cfgpp": ("", _SD + ["--method", "minority-prompt", "--solver", "cfgpp", "--guidance", "0.6",
                               "--opt-every", "3", "--lr", "0.05"]),
    "sd-mp-variant": ("", _SD + ["--method", "minority-prompt", "--init", "random", "--num-tokens", "2",
                                 "--token-position", "start", "--no-base-prompt-between", "--perturb", "0.5",
                                 "--opt-every", "2", "--opt-steps", "2", "--sg-lambda", "0.5"]),
    "sd-diverse": ("", _SD + ["--method", "diverse-prompt", "--opt-every", "2", "--minority-weight", "0.5"]),
    "px-ancestral": ("", _PIXEL + ["--method", "ancestral"]),
    "px-ancestral-cfg": ("", _PIXEL + ["--method", "ancestral", "--guidance", "2"]),
    "px-ddim": ("", _PIXEL + ["--method", "ddim"]),
    "px-sgms": ("", _PIXEL + ["--method", "sgms", "--guide-every", "2"]),
    "px-sgms-ddim": ("", _PIXEL + ["--method", "sgms", "--solver", "ddim", "--distance", "l2", "--guide-every", "3"]),
    **{f"v-{m}": ("v", _TINY + ["--method", m]) for m in
       ("ddim", "null-prompt", "cads", "cfgpp", "sgms", "minority-prompt", "diverse-prompt")},
    **{f"xl-{m}": ("xl", _TINY + ["--method", m]) for m in ("ddim", "cads", "sgms", "minority-prompt")},
}


def _model_args(key: str, tiny: dict[str, Path]) -> list[str]:
    return ["--model", str(tiny[key])] if key else []


def render(name: str, tiny: dict[str, Path], out: Path) -> dict[str, np.ndarray]:
    """Run the case through the CLI and return ``{case/file: uint8 array}``."""
    from PIL import Image

    from minority.cli.main import main

    key, argv = CASES[name]
    folder = out / name
    rc = main(["generate", *_model_args(key, tiny), *argv, "--device", "cpu", "--out", str(folder)])
    assert rc == 0, f"{name}: exit status {rc}"
    images = {}
    for png in sorted((folder / "images").glob("*.png")):
        with Image.open(io.BytesIO(png.read_bytes())) as im:
            images[f"{name}/{png.name}"] = np.array(im)
    assert images, f"{name}: no images"
    return images


def build_tiny(root: Path) -> dict[str, Path]:
    from minority.pipelines.tiny import build_tiny_sd

    return {"v": build_tiny_sd(root / "sd-v", family="sd", prediction_type="v_prediction", seed=5),
            "xl": build_tiny_sd(root / "sdxl", family="sdxl", seed=7)}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("reference-tiny"))


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("name", sorted(CASES))
def test_images_unchanged(name, tiny_models, reference, tmp_path):
    got = render(name, tiny_models, tmp_path)
    want = {k: v for k, v in reference.items() if k.startswith(f"{name}/")}
    assert sorted(got) == sorted(want), f"{name}: different image files"
    for k, arr in got.items():
        diff = np.abs(arr.astype(np.int16) - want[k].astype(np.int16)).max()
        assert arr.shape == want[k].shape and diff <= 1, f"{k}: differs by {diff} levels"


def _record(only: str | None = None) -> None:
    """Record every case, or with ``only`` just the cases whose name contains it (the others keep their arrays)."""
    import tempfile

    torch.set_num_threads(1)
    names = [n for n in sorted(CASES) if only is None or only in n]
    arrays: dict[str, np.ndarray] = {}
    if only is not None:
        with np.load(REFERENCE) as data:
            arrays = {k: data[k] for k in data.files if k.split("/")[0] not in names}
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny(Path(tmp) / "tiny")
        for name in names:
            arrays.update(render(name, tiny, Path(tmp) / "out"))
            print(name, flush=True)
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(REFERENCE, **dict(sorted(arrays.items())))
    print(f"{len(arrays)} images -> {REFERENCE} ({REFERENCE.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    if "--record" in sys.argv:  # --record [--only SUBSTRING]
        _record(sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None)
