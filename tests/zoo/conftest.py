"""Small, fast data for the zoo tests (sklearn's 8×8 digits, shipped with scikit-learn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine's cores are shared; one thread keeps timings predictable.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as (N, 1, 8, 8) float32 in [0, 1] and int64 labels, shuffled."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    x = (data.images[order] / 16.0).astype(np.float32)[:, None, :, :]
    return x, data.target[order].astype(np.int64)


@pytest.fixture(scope="session")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """A tiny separable tabular task: 3 Gaussian blobs in 6 dimensions, 240 samples."""
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 3, size=(3, 6))
    y = np.repeat(np.arange(3), 80)
    x = centres[y] + rng.normal(0, 1, size=(len(y), 6))
    order = rng.permutation(len(y))
    return x[order].astype(np.float32), y[order].astype(np.int64)
