"""`evaluate` end to end: reports, settings, references, bad input, and the CLI."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch

from minority.cli.evaluate import add_evaluate_arguments
from minority.cli.main import main as cli_main
from minority.errors import MinorityError
from minority.metrics import evaluate, extract_features, lof, manifold_scores, open_image_folder
from minority.runs.model_scores import evaluate as evaluate_with_models

FEATURE_METRICS = "precision,recall,density,coverage,fd,sfid,kid,avgknn,lof,rarity"


def test_evaluate_writes_reports_matching_pure_functions(tmp_path, gen_dir, ref_dir, pixel_extractor):
    out = tmp_path / "report" / "metrics.json"
    res = evaluate(gen_dir, reference=str(ref_dir), metrics=FEATURE_METRICS + ",ibs,alignment", features="test-pixels",
                   out=out, classifier="test-pixels", kid_subset_size=10, kid_subsets=5, progress=False)
    m = res["metrics"]
    assert list(m) == FEATURE_METRICS.split(",") + ["ibs", "alignment"]
    g = extract_features(open_image_folder(gen_dir), pixel_extractor, progress=False)["features"]
    r = extract_features(open_image_folder(ref_dir), pixel_extractor, progress=False)["features"]
    pr, dc = manifold_scores(r, g, 3), manifold_scores(r, g, 5)
    assert m["precision"]["value"] == pytest.approx(pr.precision) and m["recall"]["value"] == pytest.approx(pr.recall)
    assert m["density"]["value"] == pytest.approx(dc.density) and m["coverage"]["value"] == pytest.approx(dc.coverage)
    assert m["lof"]["value"] == pytest.approx(lof(r, g, 20).mean().item())
    assert m["avgknn"]["ci95"][0] < m["avgknn"]["value"] < m["avgknn"]["ci95"][1]
    assert 0 <= m["alignment"]["value"] <= 1 and m["ibs"]["groups"] == 3
    assert res["counts"] == {"images": 12, "images_total": 12, "skipped": [], "reference": 30, "reference_total": 30}
    saved = json.loads(out.read_text())
    assert saved["metrics"]["fd"]["value"] == pytest.approx(m["fd"]["value"])
    assert saved["extractor"] == "test-pixels" and saved["settings"]["pr_k"] == 3 and "per_image" not in saved
    with open(out.parent / "per_image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and rows[0]["file"] == "images/00000_000000.png" and rows[0]["prompt"] == "a dark thing"
    assert {"precision", "density", "avgknn", "lof", "rarity", "rarity_outside", "alignment"} <= set(rows[0])


def test_alignment_uses_prompt_classes(tmp_path, imgs, pixel_extractor):
    from PIL import Image

    dark = [Image.new("RGB", (16, 16), (20, 20, 20))] * 2
    bright = [Image.new("RGB", (16, 16), (230, 230, 230))] * 2
    gen = imgs.generation(tmp_path / "g", ["a dark item", "a white item"], 2, images=dark + bright[:1] + dark[:1])
    res = evaluate(gen, metrics="alignment,ibs", classifier="test-pixels", features="test-pixels", progress=False)
    per = {r["file"]: r for r in res["per_image"]}
    assert per["images/00000_000000.png"]["alignment"] == 1.0 and per["images/00001_000001.png"]["alignment"] == 0.0
    assert res["metrics"]["alignment"]["value"] == pytest.approx(0.75)
    assert res["metrics"]["ibs"]["per_group"]["0"]["ibs"] == pytest.approx(1.0)  # identical images
    assert res["metrics"]["ibs"]["per_group"]["1"]["ibs"] < 1.0


def test_minority_reference_and_mixed_sizes(tmp_path, imgs, gen_dir, ref_dir, pixel_extractor):
    imgs.random(1, size=(40, 24), seed=5)[0].save(gen_dir / "images" / "00000_000000.png")  # another size
    res = evaluate(gen_dir, reference=f"{ref_dir}:minority=0.5", metrics="precision,avgknn", features="test-pixels",
                   progress=False)
    assert res["counts"]["reference"] == 15 and res["reference_info"]["minority_fraction"] == 0.5
    full = evaluate(gen_dir, reference=str(ref_dir), metrics="avgknn", features="test-pixels", progress=False)
    assert res["metrics"]["avgknn"]["value"] >= full["metrics"]["avgknn"]["value"]


def test_clipscore_and_pickscore_with_tiny_clip(tmp_path, gen_dir, tiny_clip_dir):
    from minority.metrics import clip_score
    from minority.metrics.extractors.hf import load_clip

    res = evaluate(gen_dir, metrics="clipscore,pickscore", clip_weights=str(tiny_clip_dir),
                   pickscore_weights=str(tiny_clip_dir), progress=False)
    ext = load_clip(tiny_clip_dir)
    feats = extract_features(open_image_folder(gen_dir), ext, progress=False)["features"]
    prompts = open_image_folder(gen_dir).prompts()
    with torch.no_grad():
        expected = clip_score(feats, ext.text_embeds(prompts)).numpy()
    got = np.array([r["clipscore"] for r in res["per_image"]])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert res["metrics"]["clipscore"]["value"] == pytest.approx(expected.mean())
    assert res["metrics"]["pickscore"]["n"] == 12


def test_likelihood_metric_uses_per_image_generators(gen_dir):
    def fn(x, generators, rows):
        assert x.shape[1:] == (3, 16, 16) and x.min() >= -1 and x.max() <= 1
        return torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])

    res = evaluate(gen_dir, metrics="likelihood", likelihood_fn=fn, batch_size=5, progress=False)
    seeds = [r["seed"] for r in res["per_image"]]
    expected = [torch.rand(1, generator=torch.Generator().manual_seed(s), dtype=torch.float64).item() for s in seeds]
    np.testing.assert_allclose([r["likelihood_bpd"] for r in res["per_image"]], expected)
    assert res["metrics"]["likelihood"]["unit"] == "bits/dim"


def test_bad_input_errors(tmp_path, imgs, gen_dir, ref_dir, pixel_extractor):
    plain = imgs.folder(tmp_path / "plain", imgs.random(6))
    with pytest.raises(MinorityError, match="clipscore needs prompts.*no manifest.jsonl"):
        evaluate(plain, metrics="clipscore", progress=False)
    with pytest.raises(MinorityError, match="need a reference"):
        evaluate(gen_dir, metrics="precision", features="test-pixels", progress=False)
    few = imgs.folder(tmp_path / "few", imgs.random(3))
    with pytest.raises(MinorityError, match="needs at least 4 reference images.*pr_k"):
        evaluate(gen_dir, reference=str(few), metrics="precision", features="test-pixels", progress=False)
    with pytest.raises(MinorityError, match="unknown metric"):
        evaluate(gen_dir, metrics="precision,fid", progress=False)
    with pytest.raises(MinorityError, match="unknown evaluate setting"):
        evaluate(gen_dir, metrics="ibs", prk=3, progress=False)
    with pytest.raises(MinorityError, match="does not exist"):
        evaluate(tmp_path / "missing", metrics="ibs", progress=False)
    with pytest.raises(MinorityError, match="likelihood needs a model"):
        evaluate(plain, metrics="likelihood", progress=False)


def test_skip_bad_in_evaluate(tmp_path, imgs, ref_dir, pixel_extractor):
    gen = imgs.folder(tmp_path / "gen", imgs.random(8, seed=3))
    (gen / "img_0005.png").write_bytes(b"garbage")
    with pytest.raises(MinorityError, match="img_0005.png"):
        evaluate(gen, reference=str(ref_dir), metrics="precision", features="test-pixels", progress=False)
    res = evaluate(gen, reference=str(ref_dir), metrics="precision", features="test-pixels", skip_bad=True,
                   progress=False)
    assert res["counts"]["skipped"] == ["img_0005.png"] and res["counts"]["images"] == 7
    assert len(res["per_image"]) == 7


def test_default_extractor_end_to_end(tmp_path, imgs):
    gen = imgs.folder(tmp_path / "gen", imgs.random(6, size=(32, 32), seed=1))
    ref = imgs.folder(tmp_path / "ref", imgs.random(8, size=(28, 28), seed=2))
    res = evaluate(gen, reference=str(ref), metrics="precision,recall,fd,sfid,kid", progress=False)
    assert res["extractor"] == "efficientnet-lite0"
    assert all(np.isfinite(v["value"]) for v in res["metrics"].values())
    assert res["metrics"]["sfid"]["dim"] == 7 * 14 * 14


def test_cli_runs_and_shows_defaults(tmp_path, gen_dir, ref_dir, pixel_extractor, capsys):
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_evaluate_arguments(parser)
    for action in parser._actions:
        if action.dest != "help":
            assert action.help and "default: %(default)s)" in action.help, action.dest
    help_text = parser.format_help()
    assert " ".join(help_text.split()).count("default: ") == len(parser._actions) - 1
    code = cli_main(["evaluate", "--images", str(gen_dir), "--reference", str(ref_dir), "--metrics", "precision,lof,rarity",
                 "--features", "test-pixels", "--out", str(tmp_path / "o"), "--set", "lof_k=5",
                 "--cache-dir", str(tmp_path / "c")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "precision" in printed and "95% CI" in printed and "outside" in printed
    saved = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert saved["metrics"]["lof"]["k"] == 5 and (tmp_path / "o" / "per_image.csv").is_file()
    assert cli_main(["evaluate", "--images", str(tmp_path / "nothing")]) == 2


def test_likelihood_of_a_tiny_latent_model_from_the_manifest(tmp_path, imgs):
    tiny = pytest.importorskip("minority.pipelines.tiny")
    pytest.importorskip("minority.pipelines.loading")
    sd = tiny.build_tiny_sd(tmp_path / "sd", family="sd")
    gen = imgs.generation(tmp_path / "gen", ["a sneaker"], 2)
    rows = [json.loads(line) for line in (gen / "manifest.jsonl").read_text().splitlines()]
    (gen / "manifest.jsonl").write_text("".join(json.dumps({**r, "model": str(sd)}) + "\n" for r in rows))
    with pytest.raises(MinorityError, match="needs a model loader"):  # the metrics layer loads no model
        evaluate(gen, metrics="likelihood", progress=False)
    res = evaluate_with_models(gen, metrics="likelihood", likelihood_rtol=1e-3, likelihood_atol=1e-3, progress=False)
    lik = res["metrics"]["likelihood"]
    assert lik["space"] == "latent" and lik["bins"] is None and lik["n"] == 2 and np.isfinite(lik["value"])


def test_minority_score_metric_matches_the_score_function(tiny_sd_dir, tmp_path):
    """`minority-score` in evaluate equals minority.methods.sgms.minority_score on the same latents and seeds."""
    import torch

    from minority.methods.sgms import l2_distance, minority_score
    from minority.pipelines.pixel import load_pipeline
    from minority.runs.generate import GenerateConfig, run_generate

    out = run_generate(GenerateConfig(prompts=("a bag",), model=str(tiny_sd_dir), seeds=(0, 1), steps=2,
                                      out=str(tmp_path / "g")), progress=False)
    evaluate_with_models(out, metrics=["minority-score"], out=tmp_path / "metrics.json", minority_score_mc=2)
    import json

    entry = json.loads((tmp_path / "metrics.json").read_text())
    entry = entry["metrics"]["minority-score"] if "metrics" in entry else entry["minority-score"]
    pipe = load_pipeline(str(tiny_sd_dir))
    import numpy as np
    from PIL import Image

    img = np.array(Image.open(out / "images" / "00000_000001.png").convert("RGB"))
    a = torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255.0
    x = pipe.components.encode_images(a)
    cond, _ = pipe.prepare(["a bag"], None, 1.0, "ddim", 16, 16)
    ref = minority_score(pipe.denoiser, x, cond, [torch.Generator().manual_seed(1)], perturb=0.8,
                         distance=l2_distance, mc_samples=2)
    assert entry["model"] == str(tiny_sd_dir) and entry["distance"] == "l2"
    import csv

    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    got = [float(r["minority_score"]) for r in rows if r["file"].endswith("00000_000001.png")]
    assert got and abs(got[0] - float(ref[0])) < 1e-4 * max(1.0, float(ref[0]))


def test_likelihood_is_cached_by_weights_settings_and_images(tmp_path, imgs, monkeypatch):
    """A second evaluation of the same images under the same weights and solver settings reuses the per-image
    bits/dim without integrating; other settings, seeds or weights integrate again."""
    tiny = pytest.importorskip("minority.pipelines.tiny")
    from minority.metrics import likelihood as lik_mod

    sd = tiny.build_tiny_sd(tmp_path / "sd", family="sd")
    gen = imgs.generation(tmp_path / "gen", ["a sneaker", "a bag"], 2)
    rows = [json.loads(line) for line in (gen / "manifest.jsonl").read_text().splitlines()]
    (gen / "manifest.jsonl").write_text("".join(json.dumps({**r, "model": str(sd)}) + "\n" for r in rows))
    cache = tmp_path / "cache"
    kw = dict(metrics="likelihood", likelihood_rtol=1e-3, likelihood_atol=1e-3, progress=False, cache_dir=str(cache))
    first = evaluate_with_models(gen, **kw)
    calls = []
    real = lik_mod.likelihood_for_pipeline
    monkeypatch.setattr(lik_mod, "likelihood_for_pipeline", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = evaluate_with_models(gen, **kw)
    assert calls == [] and second["metrics"]["likelihood"].get("cached") is True
    assert [r["likelihood_bpd"] for r in second["per_image"]] == [r["likelihood_bpd"] for r in first["per_image"]]
    evaluate_with_models(gen, **{**kw, "likelihood_rtol": 1e-2})  # other solver settings: integrates again
    assert len(calls) == 1
    (gen / "manifest.jsonl").write_text("".join(json.dumps({**r, "model": str(sd), "seed": r["seed"] + 100}) + "\n"
                                                for r in rows))
    evaluate_with_models(gen, **kw)  # other seeds (other probe draws): integrates again
    assert len(calls) == 2
    other = tiny.build_tiny_sd(tmp_path / "sd2", family="sd", seed=11)
    evaluate_with_models(gen, **{**kw, "likelihood_model": str(other)})  # other weights: integrates again
    assert len(calls) == 3
    uncached = evaluate_with_models(gen, **{**kw, "cache": False})
    assert len(calls) == 4 and "cached" not in uncached["metrics"]["likelihood"]
