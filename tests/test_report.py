"""``minority report``: one self-contained HTML page from benchmark, generate and evaluate outputs, checked by
rendering it in headless Chromium (skipped, with the reason, where Chromium is not installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from minority.benchmark import BenchmarkConfig, benchmark
from minority.benchmark.report import build_report, markdown_to_html
from minority.cli.main import main
from minority.errors import MinorityError
from minority.runs.generate import GenerateConfig, run_generate

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def outputs(tiny_sd, tiny_sd_dir, tmp_path_factory):
    """A perf benchmark, a generation folder with an evaluation inside, and a stand-alone metrics.json."""
    root = tmp_path_factory.mktemp("report")
    bench = benchmark(BenchmarkConfig("perf", out=str(root / "bench"), quick=True, model=str(tiny_sd_dir),
                                      methods=("ddim", "minority-prompt"), seeds="2", steps=2, batch_size=2, threads=1))
    gen = run_generate(GenerateConfig(prompts=("a photo of a sneaker", "a photo of a bag"), model=str(tiny_sd_dir),
                                      method="cads", seeds=(0, 1, 2), steps=2, out=str(root / "gen"), overwrite=True),
                       pipe=tiny_sd, progress=False)
    from minority.metrics import evaluate

    evaluate(gen, metrics=["alignment"], out=gen / "eval" / "metrics.json", progress=False, cache=False)
    return bench, gen


def test_report_contents(outputs, tmp_path, capsys):
    bench, gen = outputs
    out = tmp_path / "r.html"
    assert main(["report", str(bench), str(gen), "--out", str(out), "--title", "Tiny report"]) == 0
    assert str(out) in capsys.readouterr().out
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<title>Tiny report</title>" in text
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert len(srcs) == 2 + 6  # perf.png + the grid, then the 6 gallery images
    assert all(s.startswith("data:image/png;base64,") for s in srcs)  # self-contained
    assert not re.search(r'(src|href)="(https?:|file:|/)', text)
    assert "minority benchmark perf" in text and "minority generate" in text and "--method cads" in text
    assert "Download results.csv" in text and "alignment" in text
    assert "torch" in text and "diffusers" in text  # versions
    assert text.count("<table>") >= 4


def test_report_errors_are_one_line(tmp_path):
    with pytest.raises(MinorityError, match="holds no benchmark"):
        build_report([tmp_path])
    with pytest.raises(MinorityError, match="does not exist"):
        build_report([tmp_path / "missing"])


def test_markdown_subset():
    html = markdown_to_html("# T\n\nsome `code` and **bold**\n\n| a | b |\n|---|---|\n| 1 | x\\|y |\n\n- item\n\n"
                            "```bash\necho <hi>\n```\n", Path("."))
    assert "<h2>T</h2>" in html and "<code>code</code>" in html and "<strong>bold</strong>" in html
    assert "<th>a</th>" in html and "<td>x|y</td>" in html and "<li>item</li>" in html
    assert "echo &lt;hi&gt;" in html


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(outputs, tmp_path):
    bench, gen = outputs
    page = build_report([bench, gen], tmp_path / "report.html")
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert html.count("<table") >= 4 and html.count("<img") == 8
    assert "Benchmark perf" in html and "Generation gen (cads)" in html
    shot = tmp_path / "report.png"
    res = _chromium(["--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()], tmp_path)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    with Image.open(shot) as im:
        gray = im.convert("L")
        lo, hi = gray.getextrema()
        assert im.size == (1280, 2400) and hi - lo > 100  # not a blank page: text and images were drawn
        colors = len(set(im.convert("RGB").resize((320, 600)).getdata()))
        assert colors > 50  # the embedded plots/grids decoded (a text-only page has few colours)
