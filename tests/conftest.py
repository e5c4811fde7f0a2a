"""Shared fixtures: tiny random diffusers pipelines saved once per session (offline, real CLIP tokenizer)."""

from __future__ import annotations

import logging
import os

import pytest
import torch

torch.set_num_threads(1)  # tiny models: one thread is as fast and immune to CPU contention
logging.getLogger("diffusers").setLevel(logging.ERROR)
logging.getLogger("transformers").setLevel(logging.ERROR)


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Feature and likelihood caches live in a per-session folder, never in the user's cache (a cached entry
    from an earlier run would let a test pass without exercising the code it checks)."""
    old = os.environ.get("MINORITY_CACHE_DIR")
    os.environ["MINORITY_CACHE_DIR"] = str(tmp_path_factory.mktemp("minority-cache"))
    yield
    if old is None:
        os.environ.pop("MINORITY_CACHE_DIR", None)
    else:
        os.environ["MINORITY_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    from minority.pipelines.tiny import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd", family="sd")


@pytest.fixture(scope="session")
def tiny_sd_v_dir(tmp_path_factory):
    from minority.pipelines.tiny import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd-v", family="sd", prediction_type="v_prediction", seed=5)


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory):
    from minority.pipelines.tiny import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny") / "sdxl", family="sdxl", seed=7)


@pytest.fixture(scope="session")
def tiny_sd(tiny_sd_dir):
    from minority import MinorityPipeline

    return MinorityPipeline.from_pretrained(str(tiny_sd_dir))


@pytest.fixture(scope="session")
def tiny_sdxl(tiny_sdxl_dir):
    from minority import MinorityPipeline

    return MinorityPipeline.from_pretrained(str(tiny_sdxl_dir))


@pytest.fixture
def pixel_features(monkeypatch, tmp_path):
    """Registers ``bench-test-pixels``, a fast deterministic feature extractor (average-pooled pixels as features,
    one channel as the spatial map), and isolates the feature cache; returns its name."""
    import torch.nn.functional as F

    from minority.metrics.features import FeatureExtractor, register_extractor

    class FastExtractor(FeatureExtractor):
        name = "bench-test-pixels"
        input_size = (8, 8)

        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))

        def forward(self, images):
            x = images / 255.0 * self.scale
            return {"features": F.avg_pool2d(x, 2).flatten(1), "spatial": x[:, :1].flatten(1)}

    register_extractor(FastExtractor.name, lambda weights=None, device="cpu": FastExtractor())
    monkeypatch.setenv("MINORITY_CACHE_DIR", str(tmp_path / "feature-cache"))
    return FastExtractor.name
