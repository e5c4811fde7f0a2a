"""Quick sizes of the quality protocols (MP Tab. 1–3, SGMS Tab. 1) on tiny random models: files, columns, and
that every method ran with the same prompts and seeds."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from minority.benchmark import BenchmarkConfig, benchmark, get_protocol
from minority.benchmark.tables import metric_columns
from minority.cli.main import main
from minority.methods import MinorityPrompt
from minority.runs.io import read_jsonl


@pytest.fixture(autouse=True)
def _fast_and_isolated(pixel_features):
    """Every test here uses the fast ``bench-test-pixels`` features (tests/conftest.py) and its own cache."""


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ref")
    rng = np.random.default_rng(0)
    for i in range(60):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"r{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def pixel_dir(tmp_path_factory):
    """A tiny class-conditional pixel DDPM (4 class embeddings, null class 3)."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("px") / "ddpm"
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 32),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=32, num_class_embeds=4)
    DDPMPipeline(unet, DDPMScheduler(num_train_timesteps=1000)).save_pretrained(path)
    idx = json.loads((path / "model_index.json").read_text())
    idx["null_class_label"] = 3
    (path / "model_index.json").write_text(json.dumps(idx))
    return path


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _check_outputs(out, protocol: str, metrics: list[str], items: int, seeds: int) -> list[dict]:
    p = get_protocol(protocol)
    for name in ("results.csv", "results.md", "benchmark.json", "grid.png", "metrics.png"):
        assert (out / name).is_file(), name
    rows = _rows(out / "results.csv")
    assert [r["arm"] for r in rows] == [a.name for a in p.arms]  # every method ran, in table order
    for m in metrics:
        for col in metric_columns(m):
            assert col in rows[0], col
        assert all(r[m] != "" for r in rows), f"{m} missing for some method"
    keys = None
    for arm in p.arms:
        manifest = read_jsonl(out / "runs" / arm.slug / "manifest.jsonl")
        assert len(manifest) == items * seeds
        assert {r["method"] for r in manifest} == {arm.method}
        k = sorted((r.get("prompt"), r.get("class_label"), r["seed"]) for r in manifest)
        assert keys is None or k == keys, "methods must share prompts and seeds"
        keys = k
    md = (out / "results.md").read_text()
    assert md.count("\n| ") >= len(p.arms) + 1 and "±" in md and "## Commands" in md and "## Versions" in md
    info = json.loads((out / "benchmark.json").read_text())
    assert info["protocol"] == protocol and info["versions"]["torch"] and info["versions"]["python"]
    assert set(info["details"]["arms"]) == {a.name for a in p.arms}
    with Image.open(out / "grid.png") as g:
        assert g.width > 96 * len(p.arms)
    return rows


def test_mp_table1_quick_on_tiny_sd(tiny_sd_dir, reference_dir, tmp_path, capsys):
    out = tmp_path / "t1"
    code = main(["benchmark", "mp-table1", "--quick", "--model", str(tiny_sd_dir), "--reference", str(reference_dir),
                 "--features", "bench-test-pixels", "--seeds", "3", "--steps", "4", "--threads", "1",
                 "--set", "likelihood_rtol=0.1", "--set", "likelihood_atol=0.1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err  # 4 steps: boost-skip's default Δt = 3 must stay below S
    metrics = ["alignment", "precision", "recall", "density", "coverage", "likelihood", "avgknn", "lof"]
    rows = _check_outputs(out, "mp-table1", metrics, items=2, seeds=3)
    assert all(float(r["likelihood"]) > 0 for r in rows)  # bits/dim of the tiny model's latent space
    assert (out / "distributions.png").is_file()
    md = (out / "results.md").read_text()
    assert "QUICK" in md and "clipscore skipped" in md  # no CLIP weights offline: said, not hidden
    # the likelihood confound control: detail (PNG bits/pixel) beside bits/dim, one verdict per method
    assert all(float(r["png-bpp"]) > 0 for r in rows)
    section = md.split("## Likelihood and image detail")[1].split("\n## ")[0]
    assert all(f"| {r['arm']} |" in section for r in rows) and section.count("| base |") == 1
    assert sum(v in section for v in ("explained by detail alone", "no significant gain")) >= 1
    # the recorded per-method evaluate command reproduces the benchmark's numbers
    info = json.loads((out / "benchmark.json").read_text())
    cmd = info["details"]["arms"]["ddim"]["evaluate_commands"]["main"]
    assert cmd.startswith("minority evaluate --images ") and "--metrics alignment,precision" in cmd


def test_generate_only_then_resume_evaluates_without_the_model_work(tiny_sd_dir, reference_dir, tmp_path, capsys,
                                                                    monkeypatch):
    """--generate-only does the model work (generation, likelihood into the cache) and writes no tables; the
    --resume run that follows (another machine in practice) reuses both and writes the results."""
    from minority.benchmark import quality
    from minority.metrics import likelihood as lik_mod

    out = tmp_path / "split"
    args = ["benchmark", "mp-table1", "--quick", "--model", str(tiny_sd_dir), "--reference", str(reference_dir),
            "--features", "bench-test-pixels", "--seeds", "3", "--steps", "2", "--threads", "1", "--methods",
            "ddim,cads", "--set", "likelihood_rtol=0.1", "--set", "likelihood_atol=0.1", "--out", str(out)]
    assert main([*args, "--generate-only"]) == 0, capsys.readouterr().err
    assert "--resume" in capsys.readouterr().out
    assert not (out / "results.csv").exists() and not (out / "benchmark.json").exists()
    first = {a: json.loads((out / "runs" / a / "eval-likelihood" / "metrics.json").read_text()) for a in ("ddim", "cads")}

    def must_not_run(*a, **k):
        raise AssertionError("the --resume evaluation must not generate or integrate again")

    for arm in ("ddim", "cads"):  # as if generated on a GPU machine
        cfg_path = out / "runs" / arm / "config.json"
        cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "resolved_device": "cuda"}))
    monkeypatch.setattr(lik_mod, "likelihood_for_pipeline", must_not_run)
    monkeypatch.setattr(quality, "run_generate", must_not_run)
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    rows = {r["arm"]: r for r in _rows(out / "results.csv")}
    for arm, m in first.items():
        assert float(rows[arm]["likelihood"]) == pytest.approx(m["metrics"]["likelihood"]["value"])
        assert rows[arm]["precision"] != ""
    assert "generated (and likelihoods computed) on cuda by the same command with `--device cuda --generate-only`" in (out / "results.md").read_text()
    info = json.loads((out / "benchmark.json").read_text())
    assert "--device cuda" in info["details"]["arms"]["ddim"]["generate_command"]
    assert main(["benchmark", "perf", "--generate-only", "--out", str(tmp_path / "p")]) == 2
    assert "--generate-only applies to the quality protocols" in capsys.readouterr().err


def test_resume_finishes_an_interrupted_arm_without_redrawing_its_images(tiny_sd_dir, reference_dir, tmp_path,
                                                                          capsys):
    """An arm stopped part-way (Ctrl-C, a killed job) is finished by --resume: only the missing images are drawn."""
    out = tmp_path / "part"
    args = ["benchmark", "mp-table1", "--quick", "--model", str(tiny_sd_dir), "--reference", str(reference_dir),
            "--features", "bench-test-pixels", "--seeds", "3", "--steps", "2", "--threads", "1", "--methods", "ddim",
            "--out", str(out), "--generate-only"]
    assert main(args) == 0, capsys.readouterr().err
    run = out / "runs" / "ddim"
    lines = (run / "manifest.jsonl").read_text().splitlines()
    dropped = json.loads(lines[-1])
    (run / "manifest.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # as if stopped before the last image
    (run / dropped["file"]).unlink()
    kept = {json.loads(x)["file"]: (run / json.loads(x)["file"]).stat().st_mtime_ns for x in lines[:-1]}
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    rows = read_jsonl(run / "manifest.jsonl")
    assert len(rows) == len(lines) and (run / dropped["file"]).is_file()
    assert all((run / f).stat().st_mtime_ns == t for f, t in kept.items())  # the finished images were kept


def test_resume_redraws_an_arm_when_the_model_gained_method_defaults(tiny_sd_dir, reference_dir, tmp_path, capsys):
    """Images drawn before ``minority sweep --install`` gave the model defaults for the arm's method are not reused."""
    import shutil

    from minority.benchmark.sweep import install_defaults

    model = tmp_path / "model"
    shutil.copytree(tiny_sd_dir, model)
    out = tmp_path / "md"
    args = ["benchmark", "mp-table1", "--quick", "--model", str(model), "--reference", str(reference_dir),
            "--features", "bench-test-pixels", "--seeds", "3", "--steps", "2", "--threads", "1", "--methods",
            "ddim,cads", "--set", "likelihood_rtol=0.1", "--set", "likelihood_atol=0.1", "--out", str(out),
            "--generate-only"]
    assert main(args) == 0, capsys.readouterr().err
    install_defaults(str(model), "cads", {"noise_scale": 0.3})
    mtimes = {a: (out / "runs" / a / "manifest.jsonl").stat().st_mtime_ns for a in ("ddim", "cads")}
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    assert (out / "runs" / "ddim" / "manifest.jsonl").stat().st_mtime_ns == mtimes["ddim"]  # unaffected: reused
    resolved = json.loads((out / "runs" / "cads" / "config.json").read_text())["resolved"]
    assert resolved["model_method_defaults"] == {"noise_scale": 0.3}  # redrawn under the new default


def test_mp_table2_quick_every_ablation_ran(tiny_sd_dir, reference_dir, tmp_path):
    def fast_likelihood(x, generators, rows):  # the real PF-ODE path is exercised by the mp-table1 test
        return x.flatten(1).pow(2).mean(1).double()

    cfg = BenchmarkConfig("mp-table2", out=str(tmp_path / "t2"), quick=True, model=str(tiny_sd_dir), seeds="3",
                          steps=3, reference=str(reference_dir), features="bench-test-pixels", threads=1,
                          settings={"likelihood_fn": fast_likelihood})
    out = benchmark(cfg)
    _check_outputs(out, "mp-table2", ["alignment", "precision", "density", "likelihood"], items=2, seeds=3)
    cfgs = {a.slug: json.loads((out / "runs" / a.slug / "config.json").read_text())["params"]
            for a in get_protocol("mp-table2").arms}
    ablations = ("tweedie_cfg", "stop_grad_second", "cv_in_second")
    proposed = cfgs["proposed"]  # config.json records every hyperparameter of the method
    assert proposed == MinorityPrompt().to_dict() and not any(proposed[k] for k in ablations)
    assert cfgs["plus-all-eq-6"] == {**proposed, **dict.fromkeys(ablations, True)}
    assert cfgs["plus-cv-in-second"] == {**proposed, "cv_in_second": True}
    # --resume reuses finished generations and evaluations
    files = [out / "runs" / "ddim" / "manifest.jsonl", out / "runs" / "ddim" / "eval-main" / "metrics.json"]
    before = [f.stat().st_mtime_ns for f in files]
    benchmark(BenchmarkConfig(**{**cfg.__dict__, "resume": True}))
    assert [f.stat().st_mtime_ns for f in files] == before


def test_mp_table3_quick_reports_ibs(tiny_sd_dir, reference_dir, tmp_path):
    out = benchmark(BenchmarkConfig("mp-table3", out=str(tmp_path / "t3"), quick=False, prompts=2, model=str(tiny_sd_dir),
                                    seeds="3", steps=3, reference=str(reference_dir), features="bench-test-pixels",
                                    threads=1))
    rows = _check_outputs(out, "mp-table3", ["alignment", "precision", "coverage", "ibs"], items=2, seeds=3)
    assert all(-1 <= float(r["ibs"]) <= 1 for r in rows)
    # a non-quick run smaller than the protocol says so in its title line
    assert "(reduced size: 2 × 3, 3 steps; full size 10 × 16)" in (out / "results.md").read_text()


def test_sgms_table1_quick_on_a_pixel_model(pixel_dir, reference_dir, tmp_path):
    out = benchmark(BenchmarkConfig("sgms-table1", out=str(tmp_path / "sg"), quick=True, model=str(pixel_dir),
                                    seeds="3", steps=5, reference=str(reference_dir), features="bench-test-pixels",
                                    params={"distance": "l2"}, threads=1))
    rows = _check_outputs(out, "sgms-table1", ["fd", "sfid", "precision", "recall", "avgknn", "lof"], items=2, seeds=3)
    info = json.loads((out / "benchmark.json").read_text())
    assert info["plan"]["references"] == {"quality": f"{reference_dir}:minority=0.1", "rarity": str(reference_dir)}
    q = json.loads((out / "runs" / "ancestral" / "eval-quality" / "metrics.json").read_text())
    assert q["counts"]["reference"] == 6  # the 10% most unique of 60 reference images
    assert {r["arm"]: json.loads(r["params"]).get("guide_every") for r in rows} == {
        "ancestral": None, "ddim": None, "sgms": 1, "sgms (guide_every=5)": 5,
        "boost-skip (γ=2.5, Δt=3)": None, "boost-skip (γ=4, Δt=3)": None}
    assert {r["arm"]: json.loads(r["params"]).get("gamma") for r in rows if "boost" in r["arm"]} == {
        "boost-skip (γ=2.5, Δt=3)": 2.5, "boost-skip (γ=4, Δt=3)": 4.0}
    labels = {r["class_label"] for r in read_jsonl(out / "runs" / "sgms" / "manifest.jsonl")}
    assert labels == {0, 1}


def test_protocol_refuses_the_wrong_model_kind(pixel_dir, tmp_path, capsys):
    code = main(["benchmark", "mp-table3", "--quick", "--model", str(pixel_dir), "--out", str(tmp_path / "x")])
    assert code == 2
    assert "needs a text-to-image model" in capsys.readouterr().err
