"""Per-model method defaults (issue 18): ``minority_defaults.methods.<method>`` in a model's model_index.json fills
the hyperparameters the user did not give, and is recorded in config.json and every manifest row."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from minority import MinorityPipeline
from minority.cli import main
from minority.methods import SGMS
from minority.runs.io import read_jsonl

DEFAULTS = {"sgms": {"scale": 0.5, "guide_every": 2}, "cads": {"noise_scale": 0.05}}


@pytest.fixture(scope="module")
def folder_with_defaults(tiny_sd_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mdef") / "sd"
    shutil.copytree(tiny_sd_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["minority_defaults"] = {"methods": DEFAULTS}
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def _gen(model, out, *flags) -> list[dict]:
    assert main(["generate", "a cat", "--model", str(model), "--seeds", "0-1", "--steps", "4", "--out", str(out),
                 *flags]) == 0
    return read_jsonl(out / "manifest.jsonl")


def _images(out):
    return [np.asarray(Image.open(p)) for p in sorted((out / "images").glob("*.png"))]


def test_model_defaults_fill_what_the_user_left_out(folder_with_defaults, tiny_sd_dir, tmp_path):
    rows = _gen(folder_with_defaults, tmp_path / "d", "--method", "sgms")
    assert rows[0]["scale"] == 0.5 and rows[0]["guide_every"] == 2
    assert rows[0]["model_method_defaults"] == {"scale": 0.5, "guide_every": 2}
    resolved = json.loads((tmp_path / "d" / "config.json").read_text())["resolved"]
    assert resolved["params"]["scale"] == 0.5 and resolved["model_method_defaults"] == DEFAULTS["sgms"]
    # the same images as the plain folder with the values given as flags: the defaults reach the sampler
    _gen(tiny_sd_dir, tmp_path / "e", "--method", "sgms", "--scale", "0.5", "--guide-every", "2")
    assert all(np.array_equal(a, b) for a, b in zip(_images(tmp_path / "d"), _images(tmp_path / "e"), strict=True))
    # ... and not the images of the method's own default (scale 1, every 5th step): the test can fail
    _gen(tiny_sd_dir, tmp_path / "f", "--method", "sgms")
    assert not all(np.array_equal(a, b) for a, b in zip(_images(tmp_path / "d"), _images(tmp_path / "f"), strict=True))


def test_a_flag_wins_over_the_model_default(folder_with_defaults, tmp_path):
    rows = _gen(folder_with_defaults, tmp_path / "g", "--method", "sgms", "--scale", "0.2")
    assert rows[0]["scale"] == 0.2 and rows[0]["guide_every"] == 2
    assert rows[0]["model_method_defaults"] == {"guide_every": 2}
    rows = _gen(folder_with_defaults, tmp_path / "h", "--method", "ddim")  # no defaults for ddim: nothing recorded
    assert "model_method_defaults" not in rows[0]


def test_python_api(folder_with_defaults):
    pipe = MinorityPipeline.from_pretrained(str(folder_with_defaults))
    kw = {"num_inference_steps": 2, "seeds": [0], "output_type": "latent"}
    assert pipe("a cat", method="cads", **kw).settings["params"]["noise_scale"] == 0.05
    assert pipe("a cat", method="cads", noise_scale=0.2, **kw).settings["params"]["noise_scale"] == 0.2
    # a method object is used exactly as built
    out = pipe("a cat", method=SGMS(), **kw)
    assert out.settings["params"]["scale"] == 1.0 and "model_method_defaults" not in out.settings


def test_invalid_model_defaults_are_one_line(folder_with_defaults, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(folder_with_defaults, bad)
    index = json.loads((bad / "model_index.json").read_text())
    index["minority_defaults"] = {"methods": {"sgms": {"scael": 0.5}}}
    (bad / "model_index.json").write_text(json.dumps(index))
    code = main(["generate", "a cat", "--model", str(bad), "--method", "sgms", "--steps", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "minority_defaults for sgms" in err[0] and "scael" in err[0]
