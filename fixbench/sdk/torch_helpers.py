"""Torch helpers shared by training approaches: classification loss whatever the model's
last layer is, batched accuracy, and a seeded mini-batch loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np


def outputs_are_probabilities(scores: np.ndarray) -> bool:
    """True when rows look like a softmax output (non-negative, summing to 1)."""
    if scores.size == 0:
        return False
    return bool(np.all(scores >= -1e-6) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3))


def classification_loss(probabilities: bool) -> Callable:
    """Cross-entropy on logits, or negative log-likelihood of clamped probabilities for
    models whose graph already ends in a softmax."""
    import torch
    import torch.nn.functional as F

    if probabilities:
        return lambda out, y: F.nll_loss(torch.log(out.clamp_min(1e-7)), y)
    return F.cross_entropy


def accuracy(module, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    import torch

    if len(y) == 0:
        return 0.0
    module.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            out = module(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)))
            correct += int((out.argmax(dim=1).numpy() == y[i : i + batch_size]).sum())
    return correct / len(y)


def minibatches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    order = rng.permutation(n)
    for i in range(0, n, batch_size):
        yield order[i : i + batch_size]
