"""Issue 8: prompt sources (plain text, JSON Lines, MS-COCO captions), selection, malformed input."""

from __future__ import annotations

import json

import pytest

from minority.cli.main import main
from minority.errors import MinorityError
from minority.runs.prompts import config_fields, detect_format, read_prompts_file, select_records


def _coco(path, captions):
    anns = [{"image_id": 100 + i, "id": i, "caption": c} for i, c in enumerate(captions)]
    path.write_text(json.dumps({"info": {}, "images": [], "annotations": anns}, indent=1))
    return path


def test_text_file(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# comment\n\n  a sneaker \n  # indented comment\na dress\n")
    recs = read_prompts_file(f)
    assert [r.prompt for r in recs] == ["a sneaker", "a dress"] and recs[0].line == 3


def test_jsonl_file(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a bag", "seed": 7, "id": "x1"}\n\n{"prompt": "a coat", "negative_prompt": "blurry", '
                 '"class_label": 3}\n')
    a, b = read_prompts_file(f)
    assert (a.prompt, a.seed, a.meta) == ("a bag", 7, {"id": "x1"})
    assert (b.prompt, b.seed, b.negative_prompt, b.class_label) == ("a coat", None, "blurry", 3)
    fields = config_fields([a, b], prompts=("first",))
    assert fields["prompts"] == ("first", "a bag", "a coat")
    assert fields["prompt_seeds"] == (None, 7, None) and fields["negative_prompts"] == (None, None, "blurry")
    assert fields["prompt_meta"] == ({}, {"id": "x1"}, {"class_label": 3})


def test_jsonl_class_labels_for_pixel_models(tmp_path):
    f = tmp_path / "labels.jsonl"
    f.write_text('{"class_label": 3, "seed": 1}\n{"class_label": 5}\n')
    fields = config_fields(read_prompts_file(f), class_labels=(0,))
    assert fields["prompts"] == () and fields["class_labels"] == (0, 3, 5) and fields["prompt_seeds"] == (None, 1, None)


def test_coco_captions_and_sampling(tmp_path):
    f = _coco(tmp_path / "captions_val2014.json", [f"caption  number {i}\n" for i in range(20)])
    recs = read_prompts_file(f)
    assert len(recs) == 20 and recs[3].prompt == "caption number 3" and recs[3].meta == {"image_id": 103, "id": 3}
    s1 = read_prompts_file(f, sample=5, sample_seed=1)
    assert s1 == read_prompts_file(f, sample=5, sample_seed=1) and s1 != read_prompts_file(f, sample=5, sample_seed=2)
    idx = [int(r.prompt.split()[-1]) for r in s1]
    assert idx == sorted(idx) and len(set(idx)) == 5  # file order kept, no repeats
    assert [r.prompt for r in read_prompts_file(f, offset=2, limit=3)] == [f"caption number {i}" for i in (2, 3, 4)]
    assert read_prompts_file(f, sample=5, sample_seed=1, offset=1, limit=2) == s1[1:3]


def test_format_detection_from_content(tmp_path):
    assert detect_format(tmp_path / "p", '{"prompt": "a"}\n{"prompt": "b"}\n') == "jsonl"
    assert detect_format(tmp_path / "p", '{\n "annotations": []\n}') == "coco"
    assert detect_format(tmp_path / "p", "a cat\n") == "text"
    f = tmp_path / "noext"
    f.write_text('{"prompt": "a cat", "seed": 2}\n')
    assert read_prompts_file(f)[0].seed == 2


MALFORMED = [
    ("p.jsonl", '{"prompt": "ok"}\n{"prompt": "broken"\n', "p.jsonl line 2 is not valid JSON"),
    ("p.jsonl", '{"prompt": "ok"}\n\n["a list"]\n', "p.jsonl line 3 is not a JSON object"),
    ("p.jsonl", '{"promt": "typo"}\n', "p.jsonl line 1 has unknown key 'promt'"),
    ("p.jsonl", '{"prompt": "a", "seed": -1}\n', "p.jsonl line 1: 'seed' must be an integer >= 0"),
    ("p.jsonl", '{"prompt": "a", "seed": "3"}\n', "p.jsonl line 1: 'seed' must be an integer"),
    ("p.jsonl", '{"prompt": ""}\n', "p.jsonl line 1: 'prompt' must be a non-empty string"),
    ("p.jsonl", '{"seed": 3}\n', "p.jsonl line 1 has no 'prompt'"),
    ("p.jsonl", '{"prompt": "a"}\n{"class_label": 2}\n', "p.jsonl line 2: mix of prompt records"),
    ("c.json", '{\n "annotations": [\n  {"caption": "a"},\n  {"caption": "b"}\n  {"caption": "c"}\n ]\n}',
     "c.json line 5 is not valid JSON"),
    ("c.json", '{"annotations": [{"caption": "a"}, {"image_id": 3}]}', "c.json: annotations[1] has no non-empty 'caption'"),
    ("c.json", '{"images": []}', "c.json is not an MS-COCO captions file"),
    ("e.txt", "# only a comment\n\n", "holds no prompts"),
]


@pytest.mark.parametrize("name,text,message", MALFORMED)
def test_malformed_files(tmp_path, name, text, message):
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(MinorityError) as err:
        read_prompts_file(f)
    msg = str(err.value)
    assert message in msg and str(f) in msg and "\n" not in msg


def test_selection_errors():
    recs = [None] * 3
    with pytest.raises(MinorityError, match="more prompts than the 3"):
        select_records(recs, sample=4)
    with pytest.raises(MinorityError, match="--limit must be >= 1"):
        select_records(recs, limit=0)
    with pytest.raises(MinorityError, match="--offset must be >= 0"):
        select_records(recs, offset=-1)


def test_cli_malformed_file_one_line_error(tmp_path, capsys):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "a"}\n{oops}\n')
    code = main(["generate", "--prompts-file", str(f), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"{f} line 2 is not valid JSON" in err
    code = main(["generate", "a bag", "--limit", "2", "--out", str(tmp_path / "o")])
    assert code == 2 and "--prompts-file" in capsys.readouterr().err


def _pixels(path) -> bytes:
    from PIL import Image

    with Image.open(path) as im:
        return im.tobytes()


def test_cli_jsonl_overrides(tiny_sd_dir, tmp_path, capsys):
    """Per-line seed replaces the seed list for that prompt; per-line negative prompt is used for that prompt
    only, and the image equals a run that passes that negative prompt for the whole run."""
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a bag", "seed": 5, "id": "b"}\n{"prompt": "a coat", "negative_prompt": "blurry"}\n'
                 '{"prompt": "a hat", "class_label": 4}\n')
    out = tmp_path / "o"
    code = main(["generate", "--prompts-file", str(f), "--model", str(tiny_sd_dir), "--steps", "2", "--seeds", "0-1",
                 "--batch-size", "8", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(r["prompt_index"], r["seed"]) for r in rows] == [(0, 5), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert rows[0]["id"] == "b" and rows[3]["class_label"] == 4
    assert [r["negative_prompt"] for r in rows] == [None, "blurry", "blurry", None, None]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["prompt_seeds"] == [5, None, None] and cfg["prompts_source"]["count"] == 3
    ref = tmp_path / "ref"
    assert main(["generate", "a coat", "--negative-prompt", "blurry", "--model", str(tiny_sd_dir), "--steps", "2",
                 "--seeds", "0-1", "--out", str(ref)]) == 0
    assert main(["generate", "a hat", "--model", str(tiny_sd_dir), "--steps", "2", "--seeds", "0-1",
                 "--out", str(ref / "hat")]) == 0
    for s in (0, 1):  # same pixels (the PNGs' embedded manifest rows differ: another prompt index)
        assert _pixels(out / f"images/00001_00000{s}.png") == _pixels(ref / f"images/00000_00000{s}.png")
        assert _pixels(out / f"images/00002_00000{s}.png") == _pixels(ref / f"hat/images/00000_00000{s}.png")
