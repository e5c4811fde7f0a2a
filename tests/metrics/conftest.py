"""Fixtures for the evaluation-suite tests: small image folders, generation outputs and a fast extractor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from minority.metrics.features import FeatureExtractor, register_extractor


class PixelExtractor(FeatureExtractor):
    """A fast, deterministic test extractor: 8×8 average-pooled pixels (192-d), 4×4 spatial map, 3 'classes'."""

    name = "test-pixels"
    input_size = (16, 16)
    class_names = ("dark", "medium", "bright")
    class_synonyms = (("dark",), ("medium", "grey"), ("bright", "white"))

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        x = images / 255.0 * self.scale
        mean = x.mean((1, 2, 3))
        logits = torch.stack([-(mean - c).abs() for c in (0.15, 0.5, 0.85)], 1) * 10
        return {"features": F.avg_pool2d(x, 2).flatten(1), "spatial": F.avg_pool2d(x, 4)[:, :1].flatten(1),
                "logits": logits}


@pytest.fixture
def pixel_extractor():
    ext = PixelExtractor()
    register_extractor("test-pixels", lambda weights=None, device="cpu": ext)
    return ext


def random_images(n: int, size=(16, 16), seed: int = 0, mode: str = "RGB") -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.uniform(0, 255)
        arr = np.clip(base + rng.normal(0, 40, size=(*size, 3)), 0, 255).astype(np.uint8)
        im = Image.fromarray(arr)
        out.append(im.convert(mode) if mode != "RGB" else im)
    return out


def write_folder(folder: Path, images: list[Image.Image], prefix: str = "img") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        im.save(folder / f"{prefix}_{i:04d}.png")
    return folder


def write_generation(folder: Path, prompts: list[str], per_prompt: int, seed: int = 0, images=None) -> Path:
    """A `minority generate`-style output folder: images/<pi:05d>_<seed:06d>.png, manifest.jsonl, config.json."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    k = 0
    ims = images if images is not None else random_images(len(prompts) * per_prompt, seed=seed)
    for pi, prompt in enumerate(prompts):
        for s in range(per_prompt):
            rel = f"images/{pi:05d}_{s:06d}.png"
            ims[k].save(folder / rel)
            rows.append({"file": rel, "prompt": prompt, "prompt_index": pi, "seed": s, "method": "ddim",
                         "model": "tiny"})
            k += 1
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "config.json").write_text(json.dumps({"method": "ddim"}))
    return folder


@pytest.fixture
def gen_dir(tmp_path):
    return write_generation(tmp_path / "gen", ["a dark thing", "a bright thing", "a grey thing"], 4, seed=1)


@pytest.fixture
def ref_dir(tmp_path):
    return write_folder(tmp_path / "ref", random_images(30, seed=2))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never write feature caches outside the test's temporary folder."""
    monkeypatch.setenv("MINORITY_CACHE_DIR", str(tmp_path / "feature-cache"))


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests use tiny tensors: one thread is faster and leaves the other core to concurrent jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def imgs():
    """Helpers to build image folders: ``imgs.random(n)``, ``imgs.folder(path, images)``, ``imgs.generation(...)``."""
    from types import SimpleNamespace

    return SimpleNamespace(random=random_images, folder=write_folder, generation=write_generation)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny random CLIPModel (real CLIP tokenizer, logit scale 100) saved like a hub folder."""
    from transformers import CLIPConfig, CLIPModel

    from minority.pipelines.clip_vocab import load_clip_tokenizer

    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    tok = load_clip_tokenizer(folder)
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_attention_heads=4,
                         num_hidden_layers=2, max_position_embeddings=77, eos_token_id=49407, bos_token_id=49406),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_attention_heads=4,
                           num_hidden_layers=2),
        projection_dim=16, logit_scale_init_value=float(np.log(100.0)))
    CLIPModel(cfg).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": 32, "width": 32}, "do_center_crop": True, "size": {"shortest_edge": 32},
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    return folder
