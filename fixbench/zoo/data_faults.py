"""The recipe's data fields (DeepCrime's data mutation operators) applied to a training split.

Applied in this order, each to what the previous left: unbalanced_data, missing_data,
duplicated_data, label_noise. Only the training split is changed; every draw comes from the
generator passed in, so a seed fixes the result.
"""

from __future__ import annotations

import numpy as np

from fixbench.zoo.recipe import Recipe


def apply_data_faults(
    x: np.ndarray,
    y: np.ndarray,
    recipe: Recipe,
    num_classes: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) after the recipe's data faults; returns the inputs unchanged when all are 0.

    - unbalanced_data: that fraction of the samples of each class 0 … num_classes//2 − 1 dropped;
    - missing_data: that fraction of all samples dropped;
    - duplicated_data: that fraction of samples (drawn without replacement) appended again;
    - label_noise: that fraction of labels replaced by a different class drawn uniformly.
    At least one sample always survives the drops.
    """
    keep = np.ones(len(y), dtype=bool)
    if recipe.unbalanced_data > 0:
        for cls in range(num_classes // 2):
            members = np.flatnonzero(y == cls)
            n_drop = round(recipe.unbalanced_data * len(members))
            keep[rng.choice(members, size=n_drop, replace=False)] = False
    if recipe.missing_data > 0:
        alive = np.flatnonzero(keep)
        n_drop = min(round(recipe.missing_data * len(alive)), len(alive) - 1)
        keep[rng.choice(alive, size=n_drop, replace=False)] = False
    if not keep.any():
        keep[rng.integers(len(y))] = True
    x, y = x[keep], y[keep]
    if recipe.duplicated_data > 0:
        n_dup = round(recipe.duplicated_data * len(y))
        extra = np.sort(rng.choice(len(y), size=n_dup, replace=False))
        x, y = np.concatenate([x, x[extra]]), np.concatenate([y, y[extra]])
    if recipe.label_noise > 0:
        y = y.copy()
        n_noisy = round(recipe.label_noise * len(y))
        noisy = rng.choice(len(y), size=n_noisy, replace=False)
        # A shift in 1 … C−1 (mod C) always lands on a different class, uniformly.
        shift = rng.integers(1, num_classes, size=n_noisy)
        y[noisy] = (y[noisy] + shift) % num_classes
    return x, y
