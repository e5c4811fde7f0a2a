"""Issue 8: crash-safe, resumable output (SIGKILL mid-run, planted partial/temporary files, Ctrl-C, disk full,
incompatible settings)."""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

from minority.cli.main import main


@pytest.fixture
def one_thread():
    """Images are bit-identical across runs only at the same intra-op thread count (float reductions)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def _rows(out):
    rows = [json.loads(x) for x in _lines(out / "manifest.jsonl")]
    for r in rows:
        r.pop("seconds")
    return rows


def _images(out):
    return {p.name: p.read_bytes() for p in sorted((out / "images").glob("*.png"))}


def test_sigkill_then_resume(tiny_sd_dir, tmp_path, capsys, one_thread):
    args = ["generate", "a sneaker", "a bag", "--model", str(tiny_sd_dir), "--steps", "2", "--seeds", "0-24",
            "--batch-size", "1", "--device", "cpu"]
    ref = tmp_path / "ref"
    assert main([*args, "--out", str(ref)]) == 0
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "minority", *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 120
    while len(_lines(manifest)) < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [json.loads(x) for x in _lines(manifest) if x.endswith("}")]
    assert 4 <= len(done) < 50, "the run was not killed mid-way"
    images = out / "images"
    # plant the debris of a crash: a temporary file, a damaged image that has a manifest line, and an image
    # file without a manifest line (as if killed between the rename and the append)
    (images / ".00001_000020.png.tmp-99999").write_bytes(b"\x89PNG half")
    damaged = out / done[1]["file"]
    damaged.write_bytes(damaged.read_bytes()[:40])
    (images / "00001_000024.png").write_bytes((ref / "images/00000_000000.png").read_bytes())
    with open(manifest, "a") as f:
        f.write('{"file": "images/00001_000023.png", "prompt_ind')  # a torn last line
    code = main([*args, "--out", str(out)])
    assert code == 2 and "--resume" in capsys.readouterr().err  # not without --resume
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert f"{len(done) - 1} already complete" in capsys.readouterr().out
    assert _images(out) == _images(ref)
    rows = _rows(out)
    assert rows == _rows(ref) and len({(r["prompt_index"], r["seed"]) for r in rows}) == len(rows) == 50
    assert not list(images.glob(".*tmp*")) and not list(out.glob(".*tmp*"))
    # nothing left to do: a second resume generates nothing and keeps the manifest
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert "Wrote 0 images, 50 already complete" in capsys.readouterr().out and _rows(out) == rows


def test_resume_checks_settings(tiny_sd_dir, tmp_path, capsys):
    out = tmp_path / "o"
    args = ["generate", "a bag", "--model", str(tiny_sd_dir), "--steps", "2", "--seeds", "0-1", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    for extra, key in ((["--steps", "3"], "steps"), (["--method", "cads"], "method"),
                       (["--guidance", "2"], "guidance"), (["--negative-prompt", "x"], "negative_prompt")):
        code = main([*args, *extra, "--resume"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "--resume: settings differ" in err and f"{key}: " in err, err
    code = main([*args[:2], "a coat", *args[2:], "--resume"])
    assert code == 2 and "(prompts: ['a bag'] → ['a bag', 'a coat'])" in capsys.readouterr().err
    # same resolved values are compatible: explicit defaults, another batch size
    assert main([*args, "--guidance", "7.5", "--batch-size", "1", "--resume"]) == 0
    assert main([*args, "--resume", "--overwrite"]) == 2 and "only one" in capsys.readouterr().err


def test_resume_redoes_whole_prompt_groups(tiny_sd_dir, tmp_path, capsys):
    """diverse-prompt optimises a prompt's images together: a partly missing group is redone as a whole."""
    out = tmp_path / "d"
    args = ["generate", "a sneaker", "a bag", "--model", str(tiny_sd_dir), "--method", "diverse-prompt",
            "--seeds", "0-1", "--steps", "2", "--out", str(out)]
    assert main(args) == 0
    before = _images(out)
    partner, other = out / "images/00000_000001.png", out / "images/00001_000000.png"
    stamps = partner.stat().st_mtime_ns, other.stat().st_mtime_ns
    (out / "images/00000_000000.png").unlink()
    time.sleep(0.01)
    assert main([*args, "--resume"]) == 0
    assert _images(out) == before
    assert partner.stat().st_mtime_ns != stamps[0] and other.stat().st_mtime_ns == stamps[1]


def test_ctrl_c_stops_after_batch_with_resume_hint(tiny_sd_dir, tmp_path, capsys, monkeypatch):
    from minority.pipelines.text2image import MinorityPipeline

    real = MinorityPipeline.run_batch
    calls = []

    def interrupted_call(self, *a, **k):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the first batch runs
        return real(self, *a, **k)

    monkeypatch.setattr(MinorityPipeline, "run_batch", interrupted_call)
    out = tmp_path / "c"
    code = main(["generate", "a bag", "a coat", "--model", str(tiny_sd_dir), "--steps", "2", "--seeds", "0-2",
                 "--batch-size", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 130 and len(calls) == 1 and len(_lines(out / "manifest.jsonl")) == 2
    hint = err.strip().splitlines()[-1].split("finish with: ")[1]
    argv = shlex.split(hint)
    assert argv[:2] == ["minority", "generate"] and argv[-1] == "--resume"
    assert main(argv[1:]) == 0 and len(calls) == 3
    assert len(_lines(out / "manifest.jsonl")) == 6


def test_disk_full_names_path_and_keeps_earlier_outputs(tiny_sd_dir, tmp_path, capsys, monkeypatch):
    import minority.runs.io as mio

    real_fsync, count = mio.os.fsync, []

    def fsync(fd):
        count.append(1)
        if len(count) == 6:  # config.json, then (image, manifest line) pairs: the 3rd image hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(mio.os, "fsync", fsync)
    out = tmp_path / "full"
    args = ["generate", "a bag", "--model", str(tiny_sd_dir), "--steps", "2", "--seeds", "0-3", "--out", str(out)]
    code = main(args)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(err) == 1
    err = err[0]
    assert f"Cannot write {out / 'images/00000_000002.png'}: the disk is full" in err and "--resume" in err
    assert [json.loads(x)["seed"] for x in _lines(out / "manifest.jsonl")] == [0, 1]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["00000_000000.png", "00000_000001.png"]
    monkeypatch.setattr(mio.os, "fsync", real_fsync)
    assert main([*args, "--resume"]) == 0 and len(_lines(out / "manifest.jsonl")) == 4


def test_output_under_a_regular_file(tiny_sd_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["generate", "a bag", "--model", str(tiny_sd_dir), "--steps", "2", "--out", str(blocker / "o"),
                 "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and str(blocker / "o") in err and "not writable" in err and blocker.read_text() == "x"


def test_resume_names_only_the_differing_keys():
    """Issue 15: one line naming only the differing settings, old → new (a params dict is not printed whole)."""
    from minority.errors import MinorityError
    from minority.runs.resume import check_compatible

    params = {f"p{i}": i for i in range(17)}
    old = {"method": "sgms", "guidance": 7.5, "steps": 2, "prompts": ["a"], "resolved": {"params": params}}
    new = {**old, "guidance": 9.0, "resolved": {"params": {**params, "p3": 0.5}}}
    with pytest.raises(MinorityError) as err:
        check_compatible(old, new, "OUT")
    msg = str(err.value)
    assert msg == ("--resume: settings differ from the earlier run in OUT (p3: 3 → 0.5; guidance: 7.5 → 9.0): pass "
                   "the same method flags, --guidance, or choose another --out (or --overwrite to start over).")
    with pytest.raises(MinorityError, match=r"\(method: 'sgms' → 'ddim'\): pass the same --method,"):
        check_compatible(old, {**old, "method": "ddim", "resolved": {"params": {"eta": 0.0}}}, "OUT")
    with pytest.raises(MinorityError, match=r"\(seeds\[2\]: 2 → 9\)"):
        check_compatible({**old, "seeds": [0, 1, 2, 3]}, {**old, "seeds": [0, 1, 9, 3]}, "OUT")


def test_resume_with_changed_guidance_one_line(tiny_sd_dir, tmp_path, capsys):
    out = tmp_path / "o"
    args = ["generate", "a bag", "--model", str(tiny_sd_dir), "--steps", "2", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--guidance", "9", "--steps", "3", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "(steps: 2 → 3; guidance: 7.5 → 9.0): pass the same --steps, --guidance, or" in err and "{" not in err


def test_sigterm_exits_143_and_resume_finishes(tiny_sd_dir, tmp_path, capsys):
    """Issue 15: SIGTERM stops after the current batch with status 143 (128 + 15; Ctrl-C stays 130)."""
    out = tmp_path / "t"
    args = ["generate", "a bag", "--model", str(tiny_sd_dir), "--steps", "2", "--seeds", "0-39", "--batch-size", "1",
            "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "minority", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(_lines(out / "manifest.jsonl")) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    done = len(_lines(out / "manifest.jsonl"))
    assert proc.returncode == 143 and done < 40, (proc.returncode, err)
    assert "error: Interrupted:" in err and "--resume" in err
    assert main([*args, "--resume"]) == 0 and len(_lines(out / "manifest.jsonl")) == 40
