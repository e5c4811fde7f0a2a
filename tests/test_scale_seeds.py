"""Issue 15: seeds and seed ranges are checked (0 <= seed < 2**64, at most MAX_IMAGES images per run) before any
model load and before the output folder is created; ranges are counted before they are expanded."""

from __future__ import annotations

import json

import pytest

from minority.cli.main import main
from minority.errors import MinorityError

NO_MODEL = "/nonexistent/model"  # a run that reaches the model load fails with another message


def _error(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(("seeds", "expect"), [
    (["--seeds", "0-99999999999"], "name 100,000,000,000 seeds; one run makes at most 10,000,000 images"),
    (["--seeds", str(2**64)], f"Seed {2**64} in '{2**64}' is too large"),
    (["--seeds", f"5,{2**64 - 1}-{2**64 + 3}"], "is too large: seeds go from 0 to 18446744073709551615"),
    (["--seed", str(2**64 - 1), "--images-per-prompt", "2"], "goes past the largest seed"),
    (["--images-per-prompt", "20000000"], "--images-per-prompt 20,000,000 is more than the 10,000,000 images"),
])
def test_bad_seeds_fail_before_model_and_folder(tmp_path, capsys, seeds, expect):
    out = tmp_path / "o"
    assert main(["generate", "a bag", "--model", NO_MODEL, *seeds, "--out", str(out)]) == 2
    err = _error(capsys)
    assert err.startswith("error: ") and expect in err, err
    assert not out.exists()


def test_run_size_and_per_prompt_seeds_checked_before_folder(tmp_path, capsys):
    from minority.runs.seeds import MAX_IMAGES, check_run_size, parse_seeds

    assert parse_seeds(f"{2**64 - 2}-{2**64 - 1}") == [2**64 - 2, 2**64 - 1]  # torch's manual_seed takes these
    assert check_run_size(3, range(4), (None, 7, None)) == 9
    with pytest.raises(MinorityError, match=r"would make 12,000,000 images \(2 prompts × 6,000,000 seeds\)"):
        check_run_size(2, range(6_000_000))
    assert check_run_size(MAX_IMAGES, [0]) == MAX_IMAGES
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "a bag", "seed": 2**64}) + "\n")
    out = tmp_path / "o"
    assert main(["generate", "--prompts-file", str(f), "--model", NO_MODEL, "--out", str(out)]) == 2
    assert f"Bad per-prompt seed {2**64}" in _error(capsys) and not out.exists()
