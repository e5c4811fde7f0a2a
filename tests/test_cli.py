"""``minority generate`` end to end on a tiny pipeline folder, and every bad input of the foundation issue."""

from __future__ import annotations

import json
import logging

import pytest
from PIL import Image

from minority.cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_generate_writes_layout(tiny_sd_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    code, stdout, _ = run(capsys, "generate", "a sneaker", "a dress", "--model", str(tiny_sd_dir), "--seeds", "3-4",
                          "--steps", "3", "--out", str(out), "--batch-size", "3", "--method", "cads", "--tau1", "0.5")
    assert code == 0, stdout
    files = sorted(p.name for p in (out / "images").iterdir())
    assert files == ["00000_000003.png", "00000_000004.png", "00001_000003.png", "00001_000004.png"]
    assert Image.open(out / "images" / files[0]).size == (16, 16)
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["seed"] for r in rows} == {3, 4}
    r = rows[0]
    for key in ("file", "prompt", "prompt_index", "seed", "method", "model", "steps", "guidance", "seconds", "tau1", "tau2"):
        assert key in r
    assert r["tau1"] == 0.5 and r["tau2"] == 0.9 and r["method"] == "cads"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["method"] == "cads" and cfg["params"]["tau1"] == 0.5 and cfg["params"]["tau2"] == 0.9  # all of them
    assert cfg["seeds"] == [3, 4]


def test_generate_same_images_regardless_of_batch_size(tiny_sd_dir, tmp_path, capsys):
    for bs in (1, 3):
        code, _, _ = run(capsys, "generate", "a bag", "--model", str(tiny_sd_dir), "--seeds", "0-2", "--steps", "3",
                         "--out", str(tmp_path / f"b{bs}"), "--batch-size", str(bs))
        assert code == 0
    import numpy as np

    for name in ("00000_000000.png", "00000_000001.png", "00000_000002.png"):
        a = np.asarray(Image.open(tmp_path / "b1/images" / name), dtype=int)
        b = np.asarray(Image.open(tmp_path / "b3/images" / name), dtype=int)
        # per-image generators make every draw batch-independent; CPU conv kernels differ by ~1e-6 with the
        # batch size, which can flip at most one 8-bit level
        assert np.abs(a - b).max() <= 1


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--method", "cads", "--help"])
    out = capsys.readouterr().out
    assert "(default: 0.6)" in out and "--tau1" in out and "(default: 4)" in out
    assert "--lr" not in out and "--scale" not in out  # only the chosen method's flags


def test_method_help_lists_only_its_flags_each_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--method", "sgms", "--help"])
    out = capsys.readouterr().out
    assert "--solver" in out and "--scale" in out and "--tau1" not in out and "--opt-steps" not in out
    perturb = out[out.index("  --perturb PERTURB"):out.index("  --guide-every")]
    assert perturb.count("(default") == 1 and "0.8" in perturb


def test_sgms_solver_ancestral_on_pixel_model(tmp_path, capsys):
    """Flags are typed by the chosen method: sgms's --solver takes ancestral (MinorityPrompt's takes ddim|cfgpp)."""
    code = main(["generate", "--model", "fashion-ddpm", "--method", "sgms", "--solver", "ancestral", "--class-label",
                 "3", "--steps", "2", "--seeds", "0", "--out", str(tmp_path / "s")])
    assert code == 0
    assert json.loads((tmp_path / "s" / "manifest.jsonl").read_text().splitlines()[0])["solver"] == "ancestral"


def test_existing_results_not_overwritten(tiny_sd_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert run(capsys, "generate", "a bag", "--model", str(tiny_sd_dir), "--steps", "2", "--out", str(out))[0] == 0
    before = (out / "manifest.jsonl").read_text()
    code, _, err = run(capsys, "generate", "a coat", "--model", str(tiny_sd_dir), "--steps", "2", "--out", str(out))
    assert code == 2 and "--overwrite" in err
    assert (out / "manifest.jsonl").read_text() == before


def test_long_prompt_truncated_with_warning(tiny_sd, caplog):
    caplog.set_level(logging.WARNING, logger="minority")
    tiny_sd("word " * 100, num_inference_steps=1, output_type="latent")
    assert any("tokens dropped" in r.getMessage() and "25 tokens dropped" in r.getMessage() for r in caplog.records)


BAD = [
    (["--method", "nope"], "invalid choice"),
    (["--steps", "0"], "steps must be >= 1"),
    (["--guidance", "-1"], "guidance must be >= 0"),
    (["--guidance", "nan"], "guidance must be a finite number"),
    (["--guidance", "inf"], "guidance must be a finite number"),
    (["--method", "minority-prompt", "--lr", "inf"], "lr must be a finite number"),
    (["--method", "minority-prompt", "--lr", "nan"], "lr must be a finite number"),
    (["--method", "sgms", "--scale", "nan"], "scale must be a finite number"),
    (["--method", "cads", "--noise-scale", "inf"], "noise_scale must be a finite number"),
    (["--method", "cads", "--tau1", "nan"], "tau1 must be a finite number"),
    (["--method", "sgms", "--perturb", "annealed"], "invalid float value"),
    (["--width", "0"], "width must be >= 1"),
    (["--height", "-32"], "height must be >= 1"),
    (["--method", "cfgpp", "--guidance", "2"], "[0, 1]"),
    (["--seeds", "5-2"], "Malformed seeds"),
    (["--seeds", "a,b"], "Malformed seeds"),
    (["--height", "17"], "multiple of"),
    (["--width", "10"], "multiple of"),
    (["--method", "cads", "--tau1", "0.95"], "tau1 <= tau2"),
    (["--method", "ddim", "--tau1", "0.3"], "--tau1 is not an option of method 'ddim': it belongs to cads"),
    (["--method", "sgms", "--lr", "0.1"], "it belongs to diverse-prompt, minority-prompt"),
    (["--no-such-flag"], "unrecognized option --no-such-flag"),
    (["--dtype", "int8"], "invalid choice"),
    (["--images-per-prompt", "0"], "must be >= 1"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_flag_values(tiny_sd_dir, tmp_path, capsys, extra, message):
    argv = ["generate", "a bag", "--model", str(tiny_sd_dir), "--steps", "2", "--out", str(tmp_path / "x"), *extra]
    try:
        code, _, err = run(capsys, *argv)
    except SystemExit as e:  # argparse errors
        code, err = e.code, capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert message in lines[0]
    assert not (tmp_path / "x" / "manifest.jsonl").exists()


def test_no_prompt(tiny_sd_dir, tmp_path, capsys):
    code, _, err = run(capsys, "generate", "--model", str(tiny_sd_dir), "--out", str(tmp_path / "x"))
    assert code == 2 and "No prompt" in err


def test_prompts_file(tiny_sd_dir, tmp_path, capsys):
    f = tmp_path / "p.txt"
    f.write_text("# comment\n\na sneaker\n  a dress  \n")
    code, _, _ = run(capsys, "generate", "--prompts-file", str(f), "--model", str(tiny_sd_dir), "--steps", "2",
                     "--out", str(tmp_path / "o"))
    assert code == 0
    rows = [json.loads(x) for x in (tmp_path / "o/manifest.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["a sneaker", "a dress"]
    code, _, err = run(capsys, "generate", "--prompts-file", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "q"))
    assert code == 2 and "Cannot read prompts file" in err


def test_model_not_found(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)  # read at call time: no network wait in the test
    code, _, err = run(capsys, "generate", "a bag", "--model", "no-such-org/no-such-model", "--out", str(tmp_path / "o"))
    assert code == 2 and "no-such-org/no-such-model" in err and "local diffusers folder" in err
    code, _, err = run(capsys, "generate", "a bag", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert code == 2 and "does not exist" in err


def test_output_not_writable(tiny_sd_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, "generate", "a bag", "--model", str(tiny_sd_dir), "--out", str(blocker / "sub"))
    assert code == 2 and "not writable" in err and blocker.read_text() == "x"


def test_models_command_lists_tiny(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0 and "tiny-random-sd" in out


def test_generate_minority_prompt_saves_tokens_and_trajectory(tiny_sd_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "mp"
    code, _, err = run(capsys, "generate", "a sneaker", "--model", str(tiny_sd_dir), "--method", "minority-prompt",
                       "--seeds", "0-1", "--steps", "4", "--opt-every", "2", "--opt-steps", "2", "--out", str(out))
    assert code == 0, err
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert rows[0]["token_file"] == "images/00000_000000.safetensors" and rows[0]["placeholder"] == "<minority-0>"
    assert rows[0]["opt_every"] == 2 and rows[0]["init_word"] == "cool"
    assert rows[0]["trajectory"]["step"] == [0, 2] and len(rows[0]["trajectory"]["J"][0]) == 2
    emb = load_file(str(out / rows[1]["token_file"]))
    assert list(emb) == ["<minority-1>"] and emb["<minority-1>"].shape == (1, 32)


def test_generate_diverse_prompt_groups_whole_prompts(tiny_sd_dir, tmp_path, capsys):
    code, _, err = run(capsys, "generate", "a sneaker", "a bag", "--model", str(tiny_sd_dir), "--method",
                       "diverse-prompt", "--seeds", "0-2", "--steps", "2", "--batch-size", "2", "--out", str(tmp_path / "d"))
    assert code == 0, err
    code, _, err = run(capsys, "generate", "a sneaker", "--model", str(tiny_sd_dir), "--method", "diverse-prompt",
                       "--steps", "2", "--out", str(tmp_path / "e"))
    assert code == 2 and "at least 2 images per prompt" in err


def test_generate_deterministic_flag(tiny_sd_dir, tmp_path, capsys):
    """--deterministic turns on PyTorch's deterministic kernels, is recorded in config.json, and changes nothing
    on the CPU (already run-to-run identical)."""
    import torch

    was = torch.are_deterministic_algorithms_enabled()
    try:
        for flag in ([], ["--deterministic"]):
            code, _, err = run(capsys, "generate", "a bag", "--model", str(tiny_sd_dir), "--seeds", "0-1", "--steps",
                               "2", "--method", "minority-prompt", "--out", str(tmp_path / f"d{len(flag)}"), *flag)
            assert code == 0, err
        assert torch.are_deterministic_algorithms_enabled()
        assert json.loads((tmp_path / "d1" / "config.json").read_text())["deterministic"] is True
        assert json.loads((tmp_path / "d0" / "config.json").read_text())["deterministic"] is False
        for name in ("00000_000000.png", "00000_000001.png"):
            assert (tmp_path / "d0/images" / name).read_bytes() == (tmp_path / "d1/images" / name).read_bytes()
    finally:
        torch.use_deterministic_algorithms(was)
