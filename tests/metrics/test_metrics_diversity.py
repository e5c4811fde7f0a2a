"""In-batch similarity: 1 for identical images, lower for different ones."""

from __future__ import annotations

import numpy as np
import pytest

from minority.errors import MinorityError
from minority.metrics import group_similarity, in_batch_similarity


def test_ibs_identical_and_different():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(1, 32))
    same = np.repeat(v, 4, axis=0)
    diff = rng.normal(size=(4, 32))
    assert group_similarity(same) == pytest.approx(1.0)
    assert group_similarity(diff) < 0.5
    feats = np.concatenate([same, diff])
    res = in_batch_similarity(feats, [0] * 4 + [1] * 4)
    assert res.per_group[0][0] == pytest.approx(1.0) and res.per_group[0][1] == 4
    assert res.mean == pytest.approx((1.0 + group_similarity(diff)) / 2)
    # manual pairwise mean for one group
    u = diff / np.linalg.norm(diff, axis=1, keepdims=True)
    manual = np.mean([u[i] @ u[j] for i in range(4) for j in range(4) if i != j])
    assert res.per_group[1][0] == pytest.approx(manual)


def test_ibs_needs_groups_of_two():
    with pytest.raises(MinorityError, match="at least 2 images of the same prompt"):
        in_batch_similarity(np.eye(3), [0, 1, 2])
