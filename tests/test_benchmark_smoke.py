"""CI smoke test (slow, ``make test-all``): the ``--quick`` size of every protocol on its default model with the
default features and reference data, exactly as a user runs it. Each should take a few minutes on 2 CPU cores
(the first run also extracts and caches the reference features)."""

from __future__ import annotations

import csv
import time

import pytest

from minority.benchmark import get_protocol
from minority.cli.main import main


def _fashion_mnist_available() -> bool:
    try:
        from minority.data.fashion_mnist import find_fashion_mnist

        find_fashion_mnist(None)
    except Exception:  # noqa: BLE001 -- missing package/data: the test says why it skips
        return False
    return True


def _embedded(name: str) -> bool:
    try:
        from minority.embedded import resolve_embedded

        return resolve_embedded(name) is not None
    except ImportError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["mp-table1", "mp-table2", "mp-table3", "sgms-table1", "perf"])
def test_quick_protocol_on_default_model(protocol, tmp_path, capsys):
    p = get_protocol(protocol)
    if p.kind != "perf" and not _fashion_mnist_available():
        pytest.skip("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)")
    if p.default_model and not _embedded(p.default_model):
        pytest.skip(f"the embedded model {p.default_model} has not shipped yet")
    t0 = time.perf_counter()
    code = main(["benchmark", protocol, "--quick", "--out", str(tmp_path / protocol)])
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / protocol / "results.csv", newline="") as fh:
        arms = [r["arm"] for r in csv.DictReader(fh)]
    assert set(arms) == {a.name for a in p.arms}
    print(f"{protocol} --quick: {time.perf_counter() - t0:.0f} s")
