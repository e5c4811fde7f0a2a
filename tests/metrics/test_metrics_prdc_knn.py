"""P/R/D/C against the `prdc` package; LOF against scikit-learn; AvgkNN and Rarity against brute force."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from minority.errors import MinorityError
from minority.metrics import avgknn, knn_radii, lof, manifold_scores, prdc, precision_recall, rarity


def _features(seed: int, n_real=200, n_fake=150, d=16):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n_real, d)).astype(np.float32)
    fake = (rng.normal(size=(n_fake, d)) * 1.2 + 0.3).astype(np.float32)
    return real, fake


@pytest.mark.parametrize("k", [3, 5])
def test_prdc_matches_prdc_package(k):
    from prdc import compute_prdc

    real, fake = _features(k)
    ref = compute_prdc(real_features=real.astype(np.float64), fake_features=fake.astype(np.float64), nearest_k=k)
    ours = manifold_scores(real, fake, k)
    for key in ("precision", "recall", "density", "coverage"):
        assert getattr(ours, key) == pytest.approx(float(ref[key]), abs=1e-12), key
    # per-image ingredients average to the set values
    assert ours.fake_in_real.mean().item() == pytest.approx(ours.precision)
    assert ours.fake_density.mean().item() == pytest.approx(ours.density)


def test_prdc_split_k_and_chunking():
    from prdc import compute_prdc

    real, fake = _features(7)
    out = prdc(real, fake, pr_k=3, dc_k=5)
    r3 = compute_prdc(real.astype(np.float64), fake.astype(np.float64), 3)
    r5 = compute_prdc(real.astype(np.float64), fake.astype(np.float64), 5)
    assert out["precision"] == pytest.approx(r3["precision"]) and out["recall"] == pytest.approx(r3["recall"])
    assert out["density"] == pytest.approx(r5["density"]) and out["coverage"] == pytest.approx(r5["coverage"])
    small = manifold_scores(real, fake, 3, max_elements=700)  # many chunks of a few rows
    assert (small.precision, small.recall) == precision_recall(real, fake, 3)
    assert small.density == pytest.approx(manifold_scores(real, fake, 3).density)


def test_lof_matches_sklearn():
    from sklearn.neighbors import LocalOutlierFactor

    real, fake = _features(3, n_real=120, n_fake=40)
    ref = -LocalOutlierFactor(n_neighbors=20, novelty=True).fit(real.astype(np.float64)).score_samples(fake.astype(np.float64))
    ours = lof(real, fake, k=20).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-10)
    far = np.full((1, real.shape[1]), 8.0)
    assert lof(real, far, 20).item() > ours.max()


def test_avgknn_brute_force():
    real, fake = _features(4, n_real=60, n_fake=25)
    r, f = real.astype(np.float64), fake.astype(np.float64)
    dist = np.sqrt(((f[:, None, :] - r[None, :, :]) ** 2).sum(-1))
    expected = np.sort(dist, axis=1)[:, :5].mean(1)
    np.testing.assert_allclose(avgknn(real, fake, k=5).numpy(), expected, rtol=1e-10)


def test_rarity_brute_force():
    real, fake = _features(5, n_real=50, n_fake=40)
    fake[:5] += 6.0  # far away: outside every ball
    r, f = real.astype(np.float64), fake.astype(np.float64)
    rr = np.sqrt(((r[:, None] - r[None]) ** 2).sum(-1))
    radii = np.sort(rr, axis=1)[:, 3]  # index 0 is the sample itself
    expected, outside = np.zeros(len(f)), np.zeros(len(f), bool)
    for i, x in enumerate(f):
        inside = [radii[j] for j in range(len(r)) if np.linalg.norm(r[j] - x) < radii[j]]
        if inside:
            expected[i] = min(inside)
        else:
            outside[i] = True
    res = rarity(real, fake, k=3)
    np.testing.assert_allclose(res.scores.numpy(), expected, rtol=1e-10)
    np.testing.assert_array_equal(res.outside.numpy(), outside)
    assert outside[:5].all()
    np.testing.assert_allclose(knn_radii(real, 3).numpy(), radii, rtol=1e-10)


def test_bad_inputs_raise_actionable_errors():
    real, fake = _features(6, n_real=3, n_fake=10)
    with pytest.raises(MinorityError, match="needs at least 4 reference images"):
        manifold_scores(real, fake, 3)
    with pytest.raises(MinorityError, match="lof_k"):
        lof(real, fake, 20)
    with pytest.raises(MinorityError, match="dimension mismatch"):
        avgknn(np.zeros((10, 4)), np.zeros((5, 3)), 5)
    with pytest.raises(MinorityError, match="NaN"):
        avgknn(np.full((10, 4), np.nan), np.zeros((5, 4)), 5)
    with pytest.raises(MinorityError, match="2-D"):
        avgknn(torch.zeros(10), torch.zeros(5), 5)


def test_self_knn_memo_serves_smaller_k_and_matches_fresh_search(monkeypatch):
    """The remembered reference neighbour search gives exactly what a fresh search gives (LOF, Rarity, AvgkNN
    against one large reference across many generated sets)."""
    import torch

    knn_mod = importlib.import_module("minority.metrics.knn")

    monkeypatch.setattr(knn_mod, "SELF_KNN_MIN_ROWS", 10)
    monkeypatch.setattr(knn_mod, "_SELF_KNN", knn_mod.OrderedDict())
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(60, 4, generator=g, dtype=torch.float64), torch.randn(9, 4, generator=g, dtype=torch.float64)
    calls = []
    real_knn = knn_mod.knn
    monkeypatch.setattr(knn_mod, "knn", lambda q, r=None, k=5, m=knn_mod.DEFAULT_MAX_ELEMENTS: calls.append((r is None, k))
                        or real_knn(q, r, k, m))
    lof_a = knn_mod.lof(real, fake, 20)
    rar_a = knn_mod.rarity(real, fake, 3)
    avg_a = knn_mod.avgknn_self(real, 5)
    assert [c for c in calls if c[0]] == [(True, 20)]  # one self-search of the reference, reused twice
    monkeypatch.setattr(knn_mod, "SELF_KNN_MIN_ROWS", 10**9)  # no memo: fresh searches
    torch.testing.assert_close(knn_mod.lof(real, fake, 20), lof_a)
    torch.testing.assert_close(knn_mod.rarity(real, fake, 3).scores, rar_a.scores)
    torch.testing.assert_close(knn_mod.avgknn_self(real, 5), avg_a)
    assert knn_mod.self_knn(real + 1, 3).distances.shape == (60, 3)  # other content: its own entry
