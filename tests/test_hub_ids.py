"""Hub ids resolve through the local hub cache (issue 15, items 1, 7, 8).

A throwaway ``HF_HUB_CACHE`` in the hub's own layout (``models--ORG--NAME/refs/main`` naming a snapshot,
``snapshots/REV/...`` holding the files) holds the tiny random pipelines under the exact ids the README shows;
each is loaded in a fresh process (the hub client reads its environment at import) through the API and the CLI:
with ``HF_HUB_OFFLINE=1``, and with the hub merely unreachable (``HF_ENDPOINT`` on a closed local port), where
it must fall back to the cache at once instead of retrying every file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minority import MinorityError
from minority.pipelines.loading import HUB_ID, resolve_model

README_IDS = {  # id -> tiny model fixture kind
    "stabilityai/stable-diffusion-2-1-base": "sd",
    "stabilityai/stable-diffusion-2-base": "sd",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "sd",
    "stabilityai/stable-diffusion-xl-base-1.0": "sdxl",
}
LIGHTNING = "ByteDance/SDXL-Lightning/sdxl_lightning_4step_unet.safetensors"
REV = "0123456789abcdef0123456789abcdef01234567"


def _lay_out(cache: Path, repo: str, files: dict[str, Path]) -> None:
    """Put ``files`` (name in repo -> local file) into the hub cache layout of ``repo``."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(REV)
    for name, src in files.items():
        dst = root / "snapshots" / REV / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def _folder_files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, tiny_sd_dir, tiny_sdxl_dir):
    cache = tmp_path_factory.mktemp("hub-cache")
    tiny = {"sd": tiny_sd_dir, "sdxl": tiny_sdxl_dir}
    for repo, kind in README_IDS.items():
        _lay_out(cache, repo, _folder_files(tiny[kind]))
    repo, _, fname = LIGHTNING.rpartition("/")
    _lay_out(cache, repo, {fname: tiny_sdxl_dir / "unet" / "diffusion_pytorch_model.safetensors"})
    return cache


_SCRIPT = r"""
import json, sys, time
from minority import MinorityError, load_components
out = {}
for repo in json.loads(sys.argv[1]):
    t = time.time()
    c = load_components(repo)
    out[repo] = {"family": c.family, "source": c.source, "s": time.time() - t}
c = load_components("stabilityai/stable-diffusion-xl-base-1.0", lightning_unet=sys.argv[2])
out["lightning"] = {"family": c.family}
t = time.time()
try:
    load_components("nobody/no-such-model-1.0")
except MinorityError as e:
    out["missing"] = {"message": str(e), "s": time.time() - t}
print(json.dumps(out))
"""


def _env(cache: Path, offline: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_OFFLINE"))}
    env.update(HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there: the hub is unreachable
    return env


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "unreachable"])
def test_readme_hub_ids_load_from_the_hub_cache(hub_cache, offline):
    res = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(list(README_IDS)), LIGHTNING],
                         env=_env(hub_cache, offline), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for repo, kind in README_IDS.items():
        assert out[repo]["family"] == kind and out[repo]["source"] == "hub", repo
        assert out[repo]["s"] < 20, f"{repo} took {out[repo]['s']:.1f} s"
    assert out["lightning"]["family"] == "sdxl-lightning"
    msg = out["missing"]["message"]
    assert "nobody/no-such-model-1.0" in msg and "\n" not in msg and out["missing"]["s"] < 5


def test_cli_generates_from_a_hub_id_offline(hub_cache, tmp_path):
    cmd = [sys.executable, "-m", "minority", "generate", "a photo of a dog", "--model",
           "stabilityai/stable-diffusion-xl-base-1.0", "--steps", "2", "--seeds", "0", "--out", str(tmp_path / "o")]
    t = time.time()
    res = subprocess.run(cmd, env=_env(hub_cache, offline=False), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "o" / "images" / "00000_000000.png").is_file() and time.time() - t < 120
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())
    assert cfg["model"] == "stabilityai/stable-diffusion-xl-base-1.0"


def test_hub_ids_with_dots_are_ids_and_files_are_refused(tmp_path):
    for repo in [*README_IDS, "org/model.v2", "a/b-1.0"]:
        assert HUB_ID.match(repo) and resolve_model(repo) == (repo, "hub")
    for not_id in ["./x", "/abs/x", "~/x", "a/b/c", "noslash", "a/.hidden"]:
        assert not HUB_ID.match(not_id)
    (tmp_path / "evil.ckpt").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(MinorityError, match=r"pickle checkpoint \(\.ckpt\): minority never unpickles") as err:
        resolve_model(str(tmp_path / "evil.ckpt"))
    assert "\n" not in str(err.value)
    (tmp_path / "model.safetensors").write_bytes(b"")  # single files resolve (tests/test_single_file.py loads them)
    assert resolve_model(str(tmp_path / "model.safetensors")) == (str(tmp_path / "model.safetensors"), "single-file")
    with pytest.raises(MinorityError, match="does not exist"):
        resolve_model(str(tmp_path / "missing-folder"))
