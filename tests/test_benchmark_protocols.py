"""Benchmark plumbing without generation: protocol definitions, resolution of sizes, tables, grids, CLI."""

from __future__ import annotations

import pytest

from minority.benchmark import PROTOCOLS, BenchmarkConfig, resolve
from minority.benchmark.config import parse_seed_option
from minority.benchmark.grids import pick_rows
from minority.benchmark.protocols import Arm, EvalGroup, class_prompts, get_protocol, reference_spec
from minority.benchmark.quality import check_sample_size
from minority.benchmark.tables import format_value, markdown_table, metric_cells
from minority.errors import MinorityError
from minority.methods import make_method


def test_every_arm_is_a_valid_method_configuration():
    for p in PROTOCOLS.values():
        assert p.arms, p.name
        for arm in p.arms:
            make_method(arm.method, arm.params)  # unknown params / bad choices would raise
        assert len({a.slug for a in p.arms}) == len(p.arms), f"{p.name}: folder names collide"


def test_protocol_contents_match_the_papers():
    t1 = get_protocol("mp-table1")
    assert [a.method for a in t1.arms] == ["ddim", "null-prompt", "cads", "cfgpp", "sgms", "boost-skip", "minority-prompt"]
    assert {"alignment", "precision", "recall", "density", "coverage", "likelihood", "avgknn", "lof", "rarity"} <= set(
        t1.groups[0].metrics)
    t2 = get_protocol("mp-table2")
    flags = [a.params for a in t2.arms if a.method == "minority-prompt"]
    assert flags == [{}, {"tweedie_cfg": True}, {"stop_grad_second": True}, {"cv_in_second": True},
                     {"tweedie_cfg": True, "stop_grad_second": True, "cv_in_second": True}]
    assert "ibs" in get_protocol("mp-table3").groups[0].metrics
    sg = get_protocol("sgms-table1")
    assert [(a.method, a.params.get("guide_every")) for a in sg.arms[:4]] == [("ancestral", None), ("ddim", None),
                                                                             ("sgms", 1), ("sgms", 5)]
    # Boost-and-Skip at the authors' two presets (BnS: CelebA γ 4, ImageNet-64 γ 2.5; both Δt 3)
    assert [(a.method, a.params) for a in sg.arms[4:]] == [("boost-skip", {"gamma": 2.5, "skip": 3}),
                                                           ("boost-skip", {"gamma": 4.0, "skip": 3})]
    assert sg.groups[0].options == (("minority", "0.1"),) and sg.default_model == "fashion-ddpm"


def test_slug_and_select():
    assert Arm("+all (Eq. 6)", "minority-prompt").slug == "plus-all-eq-6"
    p = get_protocol("mp-table2")
    assert [a.name for a in p.select(["plus-tweedie-cfg", "ddim"])] == ["ddim", "+tweedie_cfg"]
    with pytest.raises(MinorityError, match="has no method 'dim'"):
        p.select(["dim"])


def test_reference_spec_keeps_options_and_limits_only_the_default_dataset():
    g = EvalGroup("q", ("fd",), "fashion-mnist:train", (("minority", "0.1"),))
    assert reference_spec(g, None, 1000) == "fashion-mnist:train:limit=1000:minority=0.1"
    assert reference_spec(g, "/data/real", 1000) == "/data/real:minority=0.1"
    assert reference_spec(EvalGroup("m", ("precision",), "fashion-mnist:test"), None, None) == "fashion-mnist:test"


def test_seed_option_count_or_list():
    assert parse_seed_option(None, 3) == [0, 1, 2]
    assert parse_seed_option("4", 3) == [0, 1, 2, 3]
    assert parse_seed_option("3,5", 3) == [3, 5]
    assert parse_seed_option("2-4", 3) == [2, 3, 4]
    with pytest.raises(MinorityError):
        parse_seed_option("0", 3)


def test_resolve_quick_and_full_sizes():
    quick = resolve(BenchmarkConfig("mp-table1", quick=True))
    assert (quick.prompts, len(quick.seeds), quick.steps) == (2, 4, 10)
    assert quick.references == {"main": "fashion-mnist:test:limit=500"}
    assert quick.settings["likelihood_rtol"] == 1e-3
    full = resolve(BenchmarkConfig("mp-table1", prompts=3, seeds="0-4", steps=7, settings={"pr_k": 2}))
    assert (full.prompts, full.seeds, full.steps, full.references["main"]) == (3, [0, 1, 2, 3, 4], 7, "fashion-mnist:test")
    assert full.settings == {"pr_k": 2}
    perf = resolve(BenchmarkConfig("perf", model="a,b", params={"opt_steps": 1}))
    assert perf.models == ["a", "b"]
    assert perf.arm_params(next(a for a in perf.arms if a.method == "minority-prompt")) == {"opt_steps": 1}
    assert perf.arm_params(perf.arms[0]) == {}
    with pytest.raises(MinorityError, match="--param bogus"):
        resolve(BenchmarkConfig("mp-table1", params={"bogus": 1}))
    with pytest.raises(MinorityError, match="one model"):
        resolve(BenchmarkConfig("mp-table1", model="a,b"))
    with pytest.raises(MinorityError, match="--resume"):
        resolve(BenchmarkConfig("mp-table1", resume=True, overwrite=True))


def test_sample_size_check_names_the_fix():
    check_sample_size(6, {"main": ["density"]}, {})
    with pytest.raises(MinorityError, match="dc_k=5.*--set dc_k"):
        check_sample_size(5, {"main": ["precision", "density"]}, {})
    check_sample_size(5, {"main": ["density"]}, {"dc_k": 4})


def test_class_prompts():
    prompts = class_prompts(10)
    assert len(prompts) == 10 and prompts[0].startswith("a photo of") and "sneaker" in prompts[7]
    with pytest.raises(MinorityError, match="--prompts"):
        class_prompts(11)


def test_format_value_and_cells():
    assert format_value(0.5, 0.4, 0.6) == "0.5 ± 0.1"
    assert format_value(0.125, 0.0224, 0.471) == "0.125 [0.0224, 0.471]"
    assert format_value(3.0) == "3" and format_value("") == "–" and format_value(float("nan")) == "–"
    cells = metric_cells("recall", {"value": 0.3, "ci95": None, "n": 50})
    assert cells == {"recall": 0.3, "recall_ci_low": "", "recall_ci_high": "", "recall_n": 50}
    assert metric_cells("fd", None)["fd"] == ""
    assert markdown_table(["a", "b"], [["x|y", 1]]).splitlines()[2] == "| x\\|y | 1 |"


def test_pick_rows_interleaves_prompts():
    keys = [(p, s) for p in range(3) for s in range(4)]
    assert pick_rows(keys, 4) == [(0, 0), (1, 0), (2, 0), (0, 1)]
    assert len(pick_rows(keys, 100)) == 12


def test_cli_help_lists_protocols_and_defaults(capsys):
    from minority.cli.main import main

    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    text = capsys.readouterr().out
    for name in PROTOCOLS:
        assert name in text
    assert "(default: efficientnet-lite0)" in text and "(default: 4)" in text


def test_cli_refuses_to_overwrite_an_earlier_benchmark(tmp_path, capsys):
    from minority.cli.main import main

    (tmp_path / "benchmark.json").write_text("{}")
    assert main(["benchmark", "mp-table1", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--resume" in err and len(err.strip().splitlines()) == 1


def test_methods_flag_keeps_commas_inside_arm_names():
    from minority.benchmark.cli import config_from_args
    from minority.cli.main import build_parser

    argv = ["benchmark", "sgms-table1", "--methods", "ancestral,boost-skip (γ=2.5, Δt=3),sgms (guide_every=5)"]
    cfg = config_from_args(build_parser(argv).parse_args(argv))
    assert cfg.methods == ("ancestral", "boost-skip (γ=2.5, Δt=3)", "sgms (guide_every=5)")
    names = [a.name for a in get_protocol("sgms-table1").select(cfg.methods)]
    assert names == ["ancestral", "sgms (guide_every=5)", "boost-skip (γ=2.5, Δt=3)"]
