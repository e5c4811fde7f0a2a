"""Quick size of the perf protocol on the tiny SD- and SDXL-shaped models: columns, every method on every
backbone, and UNet pass counts that match the algorithms."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from minority.benchmark import BenchmarkConfig, benchmark, get_protocol
from minority.benchmark.perf import PassCounter, PeakMemory
from minority.benchmark.runner import PERF_COLUMNS


@pytest.fixture(scope="module")
def perf_out(tiny_sd_dir, tiny_sdxl_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("perf") / "perf"
    benchmark(BenchmarkConfig("perf", out=str(out), quick=True, model=f"{tiny_sd_dir},{tiny_sdxl_dir}", seeds="2",
                              steps=4, batch_size=2, threads=1))
    with open(out / "results.csv", newline="") as fh:
        return out, list(csv.DictReader(fh)), (str(tiny_sd_dir), str(tiny_sdxl_dir))


def test_perf_outputs_and_columns(perf_out):
    out, rows, backbones = perf_out
    for name in ("results.csv", "results.md", "benchmark.json", "perf.png"):
        assert (out / name).is_file(), name
    assert list(rows[0]) == list(PERF_COLUMNS)
    arms = [a.name for a in get_protocol("perf").arms]
    for b in backbones:
        sub = [r for r in rows if r["backbone"] == b]
        assert [r["arm"] for r in sub] == arms  # every method ran on every backbone
        assert all(r["error"] == "" for r in sub), [r["error"] for r in sub]
        assert float(next(r for r in sub if r["arm"] == "ddim")["ratio_to_ddim"]) == 1.0
        for r in sub:
            assert float(r["seconds_per_image"]) > 0 and float(r["peak_memory_mb"]) > 0
            assert r["memory_kind"] in ("rss", "rss_lifetime_peak") and r["images"] == "4"
            lo, hi = float(r["seconds_per_image_ci_low"]), float(r["seconds_per_image_ci_high"])  # 2 timed batches
            assert lo <= float(r["seconds_per_image"]) <= hi
    assert {r["family"] for r in rows} == {"sd", "sdxl"}
    assert len(list(out.glob("grid_*.png"))) == 2
    md = (out / "results.md").read_text()
    assert md.count("### ") == 2 and "× ddim" in md


def test_perf_pass_counts_match_the_algorithms(perf_out):
    # 4 steps, CFG (one batched call per step); minority-prompt optimises step 0 with opt_steps=3 (2 forwards and one
    # backward through both per iteration); sgms guides one step (a forward with gradient, one re-noised forward, the
    # unconditional forward of that step, one backward); diverse-prompt: 1 forward + 1 backward per iteration;
    # boost-skip runs S − Δt = 4 − 3 steps and nothing else.
    _, rows, _ = perf_out
    expected = {"ddim": (4, 0, 0), "null-prompt": (4, 0, 0), "cads": (4, 0, 0), "cfgpp": (4, 0, 0),
                "sgms": (6, 1, 1), "boost-skip": (1, 0, 0), "minority-prompt": (10, 6, 3), "diverse-prompt": (7, 3, 3)}
    for r in rows:
        got = (float(r["unet_forward_per_batch"]), float(r["unet_backward_per_batch"]), float(r["backward_calls_per_batch"]))
        assert got == expected[r["arm"]], (r["backbone"], r["arm"], got)


def test_pass_counter_and_peak_memory_are_exact_on_a_toy_module():
    net = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4, requires_grad=True)
    with PassCounter(net) as c:
        y = net(x)
        z = net(y)
        (z.sum()).backward()
        (g,) = torch.autograd.grad(net(x).sum(), x)
        with torch.no_grad():
            net(x)
    assert (c.unet_backward, c.backward_calls) == (3, 2)
    assert (torch.autograd.backward, torch.autograd.grad) == c._orig  # restored
    with PeakMemory("cpu") as m:
        buf = torch.ones(64 * 2**20 // 4)  # 64 MiB
        del buf
    assert m.peak_mb >= 64 and math.isfinite(m.peak_mb)
