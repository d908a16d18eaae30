"""The UnityEyes stand-in: registered, seeded, and the label follows the drawn gaze."""

from __future__ import annotations

import numpy as np

from fixbench.arrays import npz_bytes
from fixbench.data import get_dataset, load_splits
from fixbench.data.standins.eyes import GRID, NAME, render_eyes


def test_registered_as_a_stand_in():
    spec = get_dataset(NAME)
    assert spec.stand_in and spec.input_shape == (1, 36, 60) and spec.num_classes == 9
    assert spec.sensitive_attribute is None


def test_splits_are_seeded_and_scaled():
    a, b = load_splits(NAME, seed=0, scale=0.1), load_splits(NAME, seed=0, scale=0.1)
    c = load_splits(NAME, seed=1, scale=0.1)
    assert a.npz_bytes() == b.npz_bytes()
    assert npz_bytes(a.test.arrays()) != npz_bytes(c.test.arrays())
    assert sum(a.sizes().values()) == 600
    assert sum(load_splits(NAME, seed=0, scale=0.2).sizes().values()) == 1200
    for _, split in a:
        assert split.x.dtype == np.float32 and 0.0 <= split.x.min() and split.x.max() <= 1.0
        assert set(np.unique(split.y)) == set(range(9))


def test_label_is_the_binned_gaze_and_the_iris_moves_with_it():
    x, gaze, y = render_eyes(400, np.random.default_rng(0))
    cols = np.clip(((gaze[:, 0] + 1) / 2 * GRID).astype(int), 0, GRID - 1)
    rows = np.clip(((gaze[:, 1] + 1) / 2 * GRID).astype(int), 0, GRID - 1)
    assert np.array_equal(y, rows * GRID + cols)
    # The darkest pixels (the pupil) sit right of centre when the gaze looks right.
    dark_col = np.array([np.unravel_index(np.argmin(img[0]), img[0].shape)[1] for img in x])
    assert dark_col[gaze[:, 0] > 0.5].mean() > dark_col[gaze[:, 0] < -0.5].mean() + 10


def test_learnable_but_not_trivially():
    # A nearest-centroid rule on the pupil's position (darkest pixel) goes well above chance
    # (1/9) but the eye's jitter and the iris noise keep it from being perfect.
    splits = load_splits(NAME, seed=0, scale=0.2)

    def pupil(x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1).argmin(axis=1)
        return np.stack(np.unravel_index(flat, x.shape[2:]), axis=1).astype(float)

    train_f, test_f = pupil(splits.train.x), pupil(splits.test.x)
    centroids = np.stack([train_f[splits.train.y == c].mean(axis=0) for c in range(9)])
    predicted = ((test_f[:, None, :] - centroids[None]) ** 2).sum(axis=2).argmin(axis=1)
    acc = (predicted == splits.test.y).mean()
    assert 0.4 < acc < 0.98
