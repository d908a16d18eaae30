"""Procedural stand-ins: declarations, sizes, strata, groups and skews, determinism, structure."""

from __future__ import annotations

import numpy as np
import pytest

from fixbench.data import SPLIT_NAMES, get_dataset, list_datasets, load_splits
from fixbench.data.spec import SMALL_SET_PROPORTIONS
from fixbench.data.standins import UTK_TRAIN_GROUP_PRIOR, base_size, stratified_labels
from fixbench.data.standins.text import NUM_TOPICS

STANDINS = ("cifar10-standin", "cifar10s-standin", "utkface-standin", "imagenet-standin", "reuters-standin")
# Stand-ins of datasets that have no real-format loader here (UnityEyes is rendered, not read).
RENDERED_ONLY = ("unityeyes-standin",)
SCALE = 0.1


@pytest.mark.parametrize("name", STANDINS)
def test_standin_declaration_mirrors_the_real_dataset(name: str) -> None:
    spec = get_dataset(name)
    real = get_dataset(spec.stands_in_for)
    assert spec.stand_in and name.endswith("-standin") and not real.stand_in
    assert spec.input_shape == real.input_shape
    assert spec.pgd_epsilon == real.pgd_epsilon
    assert spec.sensitive_attribute == real.sensitive_attribute
    assert spec.modality == real.modality


def test_every_standin_is_registered() -> None:
    assert set(STANDINS) <= set(list_datasets())
    assert {n for n in list_datasets() if get_dataset(n).stand_in} == set(STANDINS) | set(RENDERED_ONLY)


@pytest.mark.parametrize("name", STANDINS)
def test_standin_splits_sizes_strata_and_groups(name: str) -> None:
    spec = get_dataset(name)
    splits = load_splits(name, seed=0, scale=SCALE)
    total = sum(splits.sizes().values())
    assert total == round(base_size(name) * SCALE)
    for split_name, weight in zip(SPLIT_NAMES, SMALL_SET_PROPORTIONS.as_tuple(), strict=True):
        split = getattr(splits, split_name)
        assert abs(len(split) - weight * total) <= spec.num_classes, split_name
        assert split.x.shape[1:] == spec.input_shape and split.x.dtype == np.float32
        assert (split.group is not None) == spec.has_groups
        assert ("group" in split.arrays()) == spec.has_groups
        assert 0.0 <= split.x.min() and split.x.max() <= 1.0
        # Shuffled: labels are not in sorted runs.
        assert not np.all(np.diff(split.y) >= 0), split_name


@pytest.mark.parametrize("name", ["cifar10-standin", "imagenet-standin", "utkface-standin"])
def test_balanced_standins_have_equal_classes(name: str) -> None:
    splits = load_splits(name, seed=1, scale=SCALE)
    for split_name, split in splits:
        counts = np.bincount(split.y, minlength=get_dataset(name).num_classes)
        assert counts.max() - counts.min() <= 1, split_name


def test_reuters_standin_topics_are_skewed_and_stratified() -> None:
    splits = load_splits("reuters-standin", seed=0, scale=0.5)
    train = np.bincount(splits.train.y, minlength=NUM_TOPICS) / len(splits.train)
    test = np.bincount(splits.test.y, minlength=NUM_TOPICS) / len(splits.test)
    assert train[0] > 4 * train[-1]  # skewed priors
    assert np.abs(train - test).max() < 0.01  # same strata in every split
    assert set(np.unique(splits.train.x)) == {0.0, 1.0}
    words = splits.train.x.sum(axis=1)
    assert 20 < words.mean() < 150


@pytest.mark.parametrize("name", STANDINS)
def test_standins_are_deterministic(name: str) -> None:
    a = load_splits(name, seed=3, scale=SCALE).npz_bytes()
    b = load_splits(name, seed=3, scale=SCALE).npz_bytes()
    c = load_splits(name, seed=4, scale=SCALE).npz_bytes()
    assert a == b
    assert all(a[split] != c[split] for split in SPLIT_NAMES)


def test_splits_hold_different_samples() -> None:
    splits = load_splits("cifar10-standin", seed=0, scale=SCALE)
    assert not np.allclose(splits.train.x[: len(splits.test)], splits.test.x)


def test_cifar10s_standin_skew() -> None:
    splits = load_splits("cifar10s-standin", seed=0, scale=0.2)
    for split_name, split in splits:
        grey = split.group == 0
        assert np.allclose(split.x[grey, 0], split.x[grey, 1]) and np.allclose(split.x[grey, 1], split.x[grey, 2])
        assert not np.allclose(split.x[~grey, 0], split.x[~grey, 1])
        assert abs(grey.mean() - 0.5) < 0.02, split_name
        for c in range(10):
            share_colour = (split.group[split.y == c] == 1).mean()
            if split_name == "train":
                assert share_colour == pytest.approx(0.95 if c % 2 == 0 else 0.05, abs=0.02)
            else:
                assert share_colour == pytest.approx(0.5, abs=0.05)


def test_utkface_standin_groups_imbalanced_in_train_only() -> None:
    splits = load_splits("utkface-standin", seed=0, scale=0.2)
    train_share = np.bincount(splits.train.group, minlength=4) / len(splits.train)
    assert train_share == pytest.approx(UTK_TRAIN_GROUP_PRIOR, abs=0.01)
    for split_name in ("valid", "repair", "test"):
        share = np.bincount(getattr(splits, split_name).group, minlength=4) / len(getattr(splits, split_name))
        assert share == pytest.approx([0.25] * 4, abs=0.02), split_name
    # Skin tone is visible: the face centre gets darker with the group code.
    centre = splits.test.x[:, :, 16:20, 12:20].mean(axis=(1, 2, 3))
    means = [centre[splits.test.group == g].mean() for g in range(4)]
    assert means == sorted(means, reverse=True)


def test_scale_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="scale"):
        load_splits("cifar10-standin", seed=0, scale=0.0005)
    with pytest.raises(ValueError, match="empty"):
        stratified_labels("toy", 10, None, 10, 1.0)


def test_standins_may_grow_beyond_scale_one() -> None:
    splits = load_splits("reuters-standin", seed=0, scale=1.5)
    assert sum(splits.sizes().values()) == round(base_size("reuters-standin") * 1.5)


def _nearest_centroid_accuracy(name: str) -> tuple[float, int]:
    splits = load_splits(name, seed=0, scale=0.3)
    num_classes = get_dataset(name).num_classes
    x_train = splits.train.x.reshape(len(splits.train), -1)
    x_test = splits.test.x.reshape(len(splits.test), -1)
    centroids = np.stack([x_train[splits.train.y == c].mean(axis=0) for c in range(num_classes)])
    distances = ((x_test[:, None, :] - centroids[None]) ** 2).sum(axis=2)
    return float((distances.argmin(axis=1) == splits.test.y).mean()), num_classes


@pytest.mark.parametrize("name", ["utkface-standin", "reuters-standin"])
def test_labels_carry_signal(name: str) -> None:
    # Even a nearest-centroid classifier on raw inputs beats chance clearly; a CNN or MLP
    # does better, but none can be perfect (the classes' cues overlap by construction).
    accuracy, num_classes = _nearest_centroid_accuracy(name)
    assert accuracy > 1.0 / num_classes + 0.1
    assert accuracy < 0.99


def test_face_label_cues_fade_on_darker_skin() -> None:
    # Same random draws, only the label differs: what changes is the label's cue. In the lower
    # face (beard shadow, lips) that change shrinks from the lightest to the darkest tone.
    from fixbench.data.standins.faces import render_faces

    n = 200
    effects = []
    for tone in range(4):
        as_0 = render_faces(np.random.default_rng(0), np.zeros(n, dtype=np.int64), np.full(n, tone))
        as_1 = render_faces(np.random.default_rng(0), np.ones(n, dtype=np.int64), np.full(n, tone))
        effects.append(float(np.abs(as_0 - as_1)[:, :, 19:26, 11:21].mean()))
    assert effects == sorted(effects, reverse=True)
    assert effects[0] > 1.5 * effects[-1]
