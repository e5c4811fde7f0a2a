"""``minority sweep``: the selection rule on hand-made rows, the grid and held-out checks, and a run end to end on a
tiny random SD folder whose chosen setting is installed and then used by generation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from minority.benchmark.sweep import choose, grid_arms, held_out, install_defaults, parse_grid
from minority.cli.main import main
from minority.errors import MinorityError


def _row(arm, align, prec, prec_low, lik, knn, params="{}"):
    return {"arm": arm, "params": params, "alignment": align, "precision": prec, "precision_ci_low": prec_low,
            "likelihood": lik, "avgknn": knn}


def test_rule_keeps_alignment_and_precision_and_maximises_the_minority_effect():
    rows = [_row("ddim", 0.9, 0.8, 0.7, 2.0, 10.0),
            _row("a", 0.9, 0.75, 0.6, 2.2, 11.0, '{"lr": 0.1}'),    # score 0.1 + 0.1 = 0.2, feasible
            _row("b", 0.84, 0.8, 0.7, 3.0, 15.0, '{"lr": 1.0}'),    # best effect, alignment 0.84 < 0.95 × 0.9
            _row("c", 0.9, 0.65, 0.5, 2.6, 12.0, '{"lr": 0.5}'),    # precision 0.65 below the base's CI low 0.7
            _row("d", 0.95, 0.9, 0.8, 2.1, 10.5, '{"lr": 0.05}')]   # score 0.05 + 0.05 = 0.1
    verdicts, chosen = choose(rows, "ddim")
    by = {v["arm"]: v for v in verdicts}
    assert by["a"]["feasible"] and by["d"]["feasible"]
    assert not by["b"]["feasible"] and "alignment" in by["b"]["why"]
    assert not by["c"]["feasible"] and "precision" in by["c"]["why"]
    assert by["a"]["score"] == pytest.approx(0.2) and by["d"]["score"] == pytest.approx(0.1)
    assert chosen["arm"] == "a" and chosen["params"] == {"lr": 0.1}
    # nothing beats the base: no choice
    worse = [rows[0], _row("e", 0.9, 0.8, 0.7, 1.9, 9.0, '{"lr": 0.2}')]
    assert choose(worse, "ddim")[1] is None


def test_grid_parsing_and_checks():
    grid = parse_grid(["noise_scale=0.1,0.25", "tau1=0.6"])
    assert grid == {"noise_scale": (0.1, 0.25), "tau1": (0.6,)}
    arms = grid_arms("cads", grid)
    assert [a.params for a in arms] == [{"noise_scale": 0.1, "tau1": 0.6}, {"noise_scale": 0.25, "tau1": 0.6}]
    assert arms[0].name == "cads (noise_scale=0.1, tau1=0.6)"
    with pytest.raises(MinorityError):
        grid_arms("cads", {"bogus": (1,)})
    with pytest.raises(MinorityError):
        grid_arms("cads", {})
    with pytest.raises(MinorityError):
        parse_grid(["noise_scale"])
    assert held_out("a picture of {a}", [1000, 1001]) and not held_out("a photo of {a}", [1000])
    assert not held_out("a picture of {a}", [3, 1000])
    assert held_out(None, [1000]) and not held_out(None, [5])  # pixel models: seeds only


def test_sweep_end_to_end_installs_and_generation_uses_the_choice(tiny_sd_dir, tmp_path, pixel_features, capsys):
    ref = tmp_path / "ref"
    ref.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(ref / f"r{i:02d}.png")
    model = tmp_path / "model"
    shutil.copytree(tiny_sd_dir, model)
    out = tmp_path / "sweep"
    args = ["sweep", "--model", str(model), "--method", "cads", "--grid", "noise_scale=0.05,0.5", "--prompts", "2",
            "--seeds", "1000-1002", "--steps", "2", "--reference", str(ref), "--features", pixel_features,
            "--set", "likelihood_rtol=0.1", "--set", "likelihood_atol=0.1", "--set", "pr_k=2", "--set", "avgknn_k=2",
            "--threads", "1", "--out", str(out), "--install"]
    assert main(args) == 0, capsys.readouterr().err
    result = json.loads((out / "sweep.json").read_text())
    assert result["held_out"] and result["base"] == "ddim" and len(result["verdicts"]) == 2
    assert {tuple(v["params"].items()) for v in result["verdicts"]} == {(("noise_scale", 0.05),), (("noise_scale", 0.5),)}
    md = (out / "sweep.md").read_text()
    assert "cads (noise_scale=0.05)" in md and "| ddim (base) |" in md and "**Chosen:**" in md
    prompts = {r["prompt"] for r in map(json.loads, (out / "runs" / "ddim" / "manifest.jsonl").read_text().splitlines())}
    assert prompts == {"a picture of a t-shirt", "a picture of a pair of trousers"}  # the held-out template
    index = json.loads((model / "model_index.json").read_text())
    installed = index.get("minority_defaults", {}).get("methods", {}).get("cads")
    assert installed == result["chosen"]
    # what --install writes is what generation without --noise-scale then uses (random tiny weights may choose none)
    install_defaults(str(model), "cads", {"noise_scale": 0.3})
    gen = tmp_path / "gen"
    assert main(["generate", "a dog", "--model", str(model), "--method", "cads", "--seeds", "0",
                 "--steps", "2", "--out", str(gen)]) == 0
    resolved = json.loads((gen / "config.json").read_text())["resolved"]
    assert resolved["model_method_defaults"] == {"noise_scale": 0.3}
    # the benchmark's own template is not held out: --install refuses
    capsys.readouterr()
    assert main([*args[:-1], "--prompt-template", "a photo of {a}", "--install"]) == 2
    assert "held-out" in capsys.readouterr().err
