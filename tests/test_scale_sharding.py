"""Issue 8: deterministic sharding of (prompt, seed) jobs, the accelerate launch command, and a real 2-process
CPU run (gloo) that must give byte-identical images and an equivalent merged manifest to a 1-process run."""

from __future__ import annotations

import json
import time

import torch

from minority.cli.main import build_parser, main
from minority.runs.launch import accelerate_command, argv_from_args
from minority.runs.manifest import merge, read_entries, shard_path
from minority.runs.sharding import Job, make_batches, plan_jobs, shard_units, work_units


def test_plan_jobs_with_item_seeds():
    assert plan_jobs(3, [0, 1], [None, 9, None]) == [Job(0, 0), Job(0, 1), Job(1, 9), Job(2, 0), Job(2, 1)]


def test_round_robin_covers_every_job_once():
    jobs = plan_jobs(5, range(3))
    units = work_units(jobs, whole_groups=False)
    shards = [shard_units(units, r, 3) for r in range(3)]
    flat = sorted(j for s in shards for u in s for j in u)
    assert flat == sorted(jobs)
    assert [u[0] for u in shards[1]] == [jobs[k] for k in range(1, len(jobs), 3)]


def test_whole_prompt_groups_stay_together():
    units = work_units(plan_jobs(4, range(3)), whole_groups=True)
    assert [len(u) for u in units] == [3, 3, 3, 3] and {j.prompt_index for j in units[2]} == {2}
    mine = shard_units(units, 1, 2)
    assert [u[0].prompt_index for u in mine] == [1, 3]
    assert make_batches(mine, batch_size=2, whole_groups=True) == mine  # a batch is one whole prompt


def test_batches_split_on_key_change():
    units = work_units(plan_jobs(3, range(2)), whole_groups=False)
    batches = make_batches(units, 3, False, key=lambda j: j.prompt_index == 1)
    assert [[tuple(j) for j in b] for b in batches] == [[(0, 0), (0, 1)], [(1, 0), (1, 1)], [(2, 0), (2, 1)]]


def test_argv_round_trip():
    argv = ["generate", "a bag", "-x prompt", "--model", "m", "--seeds", "0-3", "--num-processes", "2", "--method",
            "cads", "--tau1", "0.5", "--both-branches", "--no-rescale", "--resume", "--prompts-file", "p.jsonl",
            "--limit", "4"]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    again = argv_from_args(args.generate_parser, args, drop=("num_processes",))
    assert "--num-processes" not in again
    back = parser.parse_args(["generate", *again])
    for key in ("prompts", "model", "seeds", "method", "param_tau1", "param_both_branches", "param_rescale", "resume",
                "prompts_file", "limit"):
        assert getattr(back, key) == getattr(args, key), key
    cmd = accelerate_command(2, ["generate", *again])
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[-len(again) - 3:] == ["-m", "minority", "generate", *again]


def test_merge_dedupes_and_sorts(tmp_path):
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"file": "a", "prompt_index": 1, "seed": 0}) + "\n")
    shard_path(tmp_path, 0).write_text(json.dumps({"file": "b", "prompt_index": 0, "seed": 1}) + "\n{truncat")
    shard_path(tmp_path, 1).write_text(json.dumps({"file": "a2", "prompt_index": 1, "seed": 0}) + "\n")
    merge(tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [r["file"] for r in rows] == ["b", "a2"] and not shard_path(tmp_path, 0).exists()
    assert len(read_entries(tmp_path)) == 2


def _rows(out):
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("seconds")
    return rows


def test_two_processes_match_one(tiny_sd_dir, tmp_path, capfd, monkeypatch):
    """``minority generate --num-processes 2`` = ``accelerate launch --multi_gpu --num_processes 2 -m minority
    generate ...`` on the CPU (gloo). Same intra-op thread count in both runs: float reductions differ with it."""
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "a sneaker"}, {"prompt": "a bag", "seed": 11}, {"prompt": "a coat", "negative_prompt": "blurry"},
        {"prompt": "a dress"}, {"prompt": "a shirt", "id": 5}]))
    common = ["generate", "--prompts-file", str(f), "--model", str(tiny_sd_dir), "--steps", "2", "--seeds", "0-2",
              "--batch-size", "3", "--device", "cpu"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*common, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code = main([*common, "--out", str(tmp_path / "two"), "--num-processes", "2"])
    err = capfd.readouterr().err
    assert code == 0, err
    bars = [b for b in err.replace("\r", "\n").splitlines() if b.startswith("ddim:")]
    assert bars and "13/13" in bars[-1], bars  # the bar counts both processes' images (issue 15)
    one, two = tmp_path / "one", tmp_path / "two"
    names = sorted(p.name for p in (one / "images").iterdir())
    assert len(names) == 13 and names == sorted(p.name for p in (two / "images").iterdir())
    for n in names:
        assert (one / "images" / n).read_bytes() == (two / "images" / n).read_bytes(), n
    assert _rows(one) == _rows(two)
    assert not list(two.glob("manifest.rank*.jsonl"))
    logs = sorted(p.name for p in (two / "logs").iterdir())
    assert logs == ["generate.rank0.log", "generate.rank1.log"]
    assert json.loads((two / "config.json").read_text())["processes"] == 2


def test_progress_counts_every_rank(tmp_path, capsys):
    """Issue 15: the main process's bar ends at every process's total, also when the others finish last."""
    from minority.runs.progress import OverallProgress

    shards = [tmp_path / "manifest.rank1.jsonl", tmp_path / "manifest.rank2.jsonl"]
    bar = OverallProgress(12, 2, shards, enabled=True, desc="bar")
    bar.advance(2)
    shards[0].write_text("{}\n{}\n")
    bar.advance(1)
    shards[1].write_text("{}\n{}\n{}\n")  # the others finish after this process's last batch
    shards[0].write_text("{}\n{}\n{}\n{}\n")
    bar.close()  # counts the others once more
    drawn = [b for b in capsys.readouterr().err.replace("\r", "\n").splitlines() if b.startswith("bar:")]
    assert "12/12" in drawn[-1], drawn


def test_progress_refreshes_while_waiting(tmp_path):
    from minority.runs.progress import OverallProgress

    shard = tmp_path / "manifest.rank1.jsonl"
    bar = OverallProgress(5, 0, [shard], enabled=True, interval=0.01)
    try:
        shard.write_text("{}\n{}\n")
        deadline = time.time() + 30
        while bar.n < 2 and time.time() < deadline:
            time.sleep(0.01)
        assert bar.n == 2  # without any advance() of this process
    finally:
        bar.close()
