"""Issue 15: `minority score` refuses unreadable and non-square images before loading the model (one line naming
the file and its size); --skip-bad leaves them out with one warning that counts them."""

from __future__ import annotations

import numpy as np
from PIL import Image

from minority.cli.main import main

NO_MODEL = "/nonexistent/model"  # a run that reaches the model load fails with another message


def _error(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


def test_score_refuses_non_square_images(tiny_sd_dir, tmp_path, capsys, caplog):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.png": (32, 32), "b.png": (32, 32), "wide.png": (32, 48)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    csv = tmp_path / "s.csv"
    base = ["score", "--images", str(folder), "--out", str(csv), "--mc-samples", "1", "--distance", "l2"]
    assert main([*base, "--model", NO_MODEL]) == 2
    err = _error(capsys)
    assert err.startswith(f"error: cannot read image {folder / 'broken.png'}") and "--skip-bad" in err
    (folder / "broken.png").unlink()
    assert main([*base, "--model", NO_MODEL]) == 2
    assert (f"error: image {folder / 'wide.png'} is 48x32, not square (it would be squashed to the model's square "
            "size): crop it to a square, or pass --skip-bad") in _error(capsys)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main([*base, "--model", str(tiny_sd_dir), "--skip-bad"]) == 0
    assert "Skipped 2 unreadable or non-square images (first: cannot read image" in caplog.text
    rows = csv.read_text().splitlines()
    assert len(rows) == 3 and all("wide" not in r and "broken" not in r for r in rows)
