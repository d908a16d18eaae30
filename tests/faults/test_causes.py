"""Injected causes of misclassification faults: what they drop or flip, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from fixbench.data import Split
from fixbench.faults.causes import Causes, inject_causes


def _split(with_groups: bool = True) -> Split:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50).astype(np.int64)
    group = np.tile(np.array([0, 0, 0, 1]), 50).astype(np.int64) if with_groups else None
    return Split(x=rng.normal(size=(200, 3)).astype(np.float32), y=y, group=group)


def test_no_causes_return_the_split_untouched():
    split = _split()
    out, record = inject_causes(split, Causes(), 4, 2, np.random.default_rng(0))
    assert out is split and record == {}


def test_class_imbalance_drops_from_the_first_half_of_the_classes():
    out, record = inject_causes(_split(), Causes(class_imbalance=0.8), 4, 2, np.random.default_rng(0))
    assert np.bincount(out.y, minlength=4).tolist() == [10, 10, 50, 50]
    assert record["class_imbalance_dropped"] == {"0": 40, "1": 40}
    assert len(out.group) == len(out.y) == len(out.x) == 120


def test_group_imbalance_drops_the_minority_groups_and_label_noise_flips():
    out, record = inject_causes(_split(), Causes(group_imbalance=0.5, label_noise=0.1), 4, 2, np.random.default_rng(0))
    assert np.bincount(out.group).tolist() == [150, 25]  # group 1 (the smaller) halved
    assert record["label_noise_flipped"] == round(0.1 * 175)
    # Flipped labels always change class: compare with the same drop without noise.
    clean, _ = inject_causes(_split(), Causes(group_imbalance=0.5), 4, 2, np.random.default_rng(0))
    assert (clean.y != out.y).sum() == record["label_noise_flipped"]


def test_causes_are_seeded():
    a, _ = inject_causes(_split(), Causes(class_imbalance=0.5, label_noise=0.2), 4, 2, np.random.default_rng(7))
    b, _ = inject_causes(_split(), Causes(class_imbalance=0.5, label_noise=0.2), 4, 2, np.random.default_rng(7))
    c, _ = inject_causes(_split(), Causes(class_imbalance=0.5, label_noise=0.2), 4, 2, np.random.default_rng(8))
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.y, c.y)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"imbalance": 0.5}, r"unknown field\(s\) \['imbalance'\]"),
        ({"label_noise": 1.0}, "causes.label_noise"),
        ({"class_imbalance": -0.1}, "causes.class_imbalance"),
        ({"group_imbalance": "a lot"}, "causes.group_imbalance"),
        ({"minority_classes": []}, "causes.minority_classes"),
        ({"minority_groups": [-1]}, "causes.minority_groups"),
    ],
)
def test_bad_causes_name_the_field(data, message):
    with pytest.raises(ValueError, match=message):
        Causes.from_dict(data)


def test_group_imbalance_needs_a_sensitive_attribute_and_valid_ids():
    with pytest.raises(ValueError, match="causes.group_imbalance: this dataset declares no sensitive attribute"):
        inject_causes(_split(with_groups=False), Causes(group_imbalance=0.5), 4, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"causes.minority_classes: \[7\] outside"):
        inject_causes(_split(), Causes(class_imbalance=0.5, minority_classes=(7,)), 4, 2, np.random.default_rng(0))


def test_to_dict_keeps_only_what_is_set():
    assert Causes().to_dict() == {}
    assert Causes(group_imbalance=0.6, minority_groups=(1,)).to_dict() == {
        "group_imbalance": 0.6,
        "minority_groups": [1],
    }
