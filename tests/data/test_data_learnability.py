"""A small CNN learns the CIFAR-10-like stand-in well above chance (slow: trains a network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fixbench.data import load_splits


@pytest.mark.slow
def test_small_cnn_learns_cifar10_standin() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    splits = load_splits("cifar10-standin", seed=0, scale=0.3)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = torch.from_numpy(splits.train.x), torch.from_numpy(splits.train.y)
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), 32):
            batch = order[start : start + 32]
            optimiser.zero_grad()
            nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            optimiser.step()
    with torch.no_grad():
        predicted = net(torch.from_numpy(splits.test.x)).argmax(dim=1).numpy()
    accuracy = float((predicted == splits.test.y).mean())
    print(f"cifar10-standin test accuracy {accuracy:.3f}")
    assert accuracy > 0.2, accuracy  # chance is 0.1
    assert accuracy < 1.0
    assert np.bincount(predicted, minlength=10).max() < len(predicted)  # not one class for all
