"""Partitioning: stratification, proportions, scale, determinism, split files."""

from __future__ import annotations

import numpy as np
import pytest

from fixbench.arrays import load_split, npz_bytes
from fixbench.data import SPLIT_NAMES, load_splits
from fixbench.data.spec import SMALL_SET_PROPORTIONS, STUDY_PROPORTIONS
from fixbench.data.splits import allocate, seeded_rng, stratified_partition


def test_allocate_sums_and_follows_weights() -> None:
    assert allocate(100, (0.63, 0.07, 0.15, 0.15)) == [63, 7, 15, 15]
    for total in range(40):
        parts = allocate(total, (0.63, 0.07, 0.15, 0.15), tie_offset=total)
        assert sum(parts) == total
        assert all(abs(p - total * w) < 1 for p, w in zip(parts, (0.63, 0.07, 0.15, 0.15), strict=True))


def test_allocate_spreads_ties_across_splits() -> None:
    # 1 sample, two equal weights: who gets it must depend on the tie offset.
    assert allocate(1, (0.5, 0.5), tie_offset=0) == [1, 0]
    assert allocate(1, (0.5, 0.5), tie_offset=1) == [0, 1]


def test_partition_is_a_disjoint_cover_and_stratified() -> None:
    y = np.repeat(np.arange(5), [100, 200, 300, 50, 350])
    idx = stratified_partition(y, SMALL_SET_PROPORTIONS, seeded_rng(3))
    joined = np.concatenate([idx[n] for n in SPLIT_NAMES])
    assert sorted(joined.tolist()) == list(range(len(y)))
    overall = np.bincount(y) / len(y)
    for name, weight in zip(SPLIT_NAMES, SMALL_SET_PROPORTIONS.as_tuple(), strict=True):
        part = y[idx[name]]
        assert len(part) == pytest.approx(weight * len(y), abs=5)
        assert np.bincount(part, minlength=5) / len(part) == pytest.approx(overall, abs=0.02)
    # Shuffled inside each split, not sorted by class.
    assert not np.all(np.diff(y[idx["train"]]) >= 0)


def test_partition_respects_an_official_test_part() -> None:
    y = np.tile(np.arange(10), 70)
    official_test = np.zeros(len(y), dtype=bool)
    official_test[600:] = True
    idx = stratified_partition(y, STUDY_PROPORTIONS, seeded_rng(0), official_test=official_test)
    assert set(idx["train"]) | set(idx["valid"]) == set(range(600))
    assert set(idx["repair"]) | set(idx["test"]) == set(range(600, 700))
    assert (len(idx["train"]), len(idx["valid"]), len(idx["repair"]), len(idx["test"])) == (540, 60, 50, 50)


def test_partition_refuses_a_scale_that_empties_a_split() -> None:
    y = np.arange(4) % 2
    with pytest.raises(ValueError, match="scale"):
        stratified_partition(y, SMALL_SET_PROPORTIONS, seeded_rng(0), scale=0.5)


def test_mnist5000_sizes_classes_and_input_scale() -> None:
    splits = load_splits("mnist5000", seed=0)
    assert splits.sizes() == {"train": 3150, "valid": 350, "repair": 750, "test": 750}
    for name, split in splits:
        assert split.x.shape[1:] == (1, 28, 28) and split.x.dtype == np.float32
        assert split.group is None and "group" not in split.arrays()
        assert 0.0 <= split.x.min() and split.x.max() <= 1.0 and split.x.max() > 0.9
        # 500 digits per class → every class exactly equally represented.
        counts = np.bincount(split.y, minlength=10)
        assert (counts == counts[0]).all(), name
    # Different splits hold different digits (no sample in two splits).
    flat = {n: {s.x[i].tobytes() for i in range(len(s))} for n, s in splits}
    assert not flat["train"] & flat["test"] and not flat["repair"] & flat["test"]


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    a = load_splits("mnist5000", seed=7, scale=0.2).npz_bytes()
    b = load_splits("mnist5000", seed=7, scale=0.2).npz_bytes()
    c = load_splits("mnist5000", seed=8, scale=0.2).npz_bytes()
    assert a == b
    assert all(a[n] != c[n] for n in SPLIT_NAMES)


def test_scale_shrinks_and_keeps_strata() -> None:
    splits = load_splits("mnist5000", seed=1, scale=0.1)
    sizes = splits.sizes()
    assert sum(sizes.values()) == 500
    # 50 per class cut 31.5 / 3.5 / 7.5 / 7.5: each split is off by at most one per class.
    for name, weight in zip(SPLIT_NAMES, SMALL_SET_PROPORTIONS.as_tuple(), strict=True):
        assert abs(sizes[name] - weight * 500) <= 5, name
        counts = np.bincount(getattr(splits, name).y, minlength=10)
        assert counts.max() - counts.min() <= 1, name


def test_save_writes_readable_split_files(tmp_path) -> None:
    splits = load_splits("digits", seed=0, scale=0.3)
    paths = splits.save(tmp_path)
    assert sorted(paths) == sorted(SPLIT_NAMES)
    x, y, group = load_split(paths["repair"])
    assert np.array_equal(x, splits.repair.x) and np.array_equal(y, splits.repair.y) and group is None
    assert paths["test"].read_bytes() == npz_bytes(splits.test.arrays())


def test_digits_input_scale() -> None:
    splits = load_splits("digits", seed=0)
    assert sum(splits.sizes().values()) == 1797
    assert splits.train.x.shape[1:] == (1, 8, 8)
    assert splits.train.x.max() == 1.0 and splits.train.x.min() == 0.0
