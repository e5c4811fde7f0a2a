"""Issue 15: one writer per --out. A second run is refused before it writes anything, naming the holder; the lock
of a killed (SIGKILL) run is taken over; the ranks of one sharded run share their launcher's lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from minority.cli.main import main
from minority.errors import MinorityError


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def _error(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


_HOLDER = ("import sys, time\nfrom minority.runs.lock import RunLock\nlock = RunLock.acquire(sys.argv[1])\n"
           "print('held', flush=True)\ntime.sleep(600)\n")


def _hold(out):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_refused_and_stale_lock_taken_over(tiny_sd_dir, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    holder = _hold(out)
    args = ["generate", "a bag", "--model", str(tiny_sd_dir), "--steps", "2", "--seeds", "0-1", "--out", str(out)]
    try:
        for extra in ([], ["--resume"], ["--overwrite"]):
            assert main([*args, *extra]) == 2
            err = _error(capsys)
            assert f"error: {out} is in use by another minority run (pid {holder.pid} on " in err, err
            assert "choose another --out" in err
            assert sorted(p.name for p in out.iterdir()) == [".minority.lock"]  # nothing written
    finally:
        holder.kill()  # SIGKILL: the lock file stays, its flock is gone
        holder.wait()
    assert (out / ".minority.lock").exists()
    assert main(args) == 0
    assert len(_lines(out / "manifest.jsonl")) == 2 and not (out / ".minority.lock").exists()


def test_lock_is_per_run_not_per_rank(tmp_path, monkeypatch):
    from minority.runs.lock import ENV_TOKEN, RunLock, lock_for_launch, lock_for_process

    with lock_for_launch(tmp_path) as held:  # `--num-processes N`: the launcher holds it for the ranks
        assert os.environ[ENV_TOKEN] == held.token
        lock_for_process(tmp_path, is_main=True).release()  # rank 0 of this run
        lock_for_process(tmp_path, is_main=False).release()  # rank 1
    assert ENV_TOKEN not in os.environ and not (tmp_path / ".minority.lock").exists()
    monkeypatch.setenv(ENV_TOKEN, "another run's token")
    with RunLock.acquire(tmp_path):
        with pytest.raises(MinorityError, match=f"pid {os.getpid()} on"):
            lock_for_process(tmp_path, is_main=True)  # a foreign token does not open the door
        lock_for_process(tmp_path, is_main=False).release()  # other ranks never lock
    lock = lock_for_process(tmp_path, is_main=True)  # the bare `accelerate launch` main process takes it
    assert json.loads((tmp_path / ".minority.lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_file_system_without_locks_warns_and_runs(tmp_path, monkeypatch, caplog):
    import errno

    import minority.runs.lock as mlock

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(mlock.fcntl, "flock", no_locks)
    mlock.RunLock.acquire(tmp_path).release()
    assert "has no file locks" in caplog.text
