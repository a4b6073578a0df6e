"""k-fold splits (brats_seg.training.splits)."""

from __future__ import annotations

import pytest

from brats_seg.training.splits import make_folds


def test_make_folds_is_seeded_and_partitions() -> None:
    names = [f"case{i:02d}" for i in range(23)]
    folds = make_folds(names, k=5, seed=0)
    assert folds == make_folds(names, k=5, seed=0)
    assert folds != make_folds(names, k=5, seed=1)
    assert sorted(sum(folds, [])) == names
    assert sorted(len(f) for f in folds) == [4, 4, 5, 5, 5]
    with pytest.raises(ValueError, match="3 cases cannot make 5 folds"):
        make_folds(names[:3], k=5)
