"""Tiny fault recipes on sklearn's 8×8 digits, so that builds take seconds."""

from __future__ import annotations

import pytest
import torch

from fixbench.faults import recipe_faults
from fixbench.faults.fault_spec import FaultRecipe


@pytest.fixture(autouse=True)
def _one_thread_fresh_cache():
    # Shared cores: one thread. A fresh original-run cache so every test really trains.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    recipe_faults._ORIGINAL_RUNS.clear()
    yield
    recipe_faults._ORIGINAL_RUNS.clear()
    torch.set_num_threads(before)


@pytest.fixture
def tiny_mis() -> FaultRecipe:
    """A misclassification fault: LeNet-5, two epochs on a fifth of the digits."""
    return FaultRecipe(
        "digits-tiny",
        "misclassification",
        "digits",
        "lenet5",
        seed=3,
        overrides={"epochs": 2},
        description="tiny test fault",
    )


@pytest.fixture
def tiny_recipe_fault() -> FaultRecipe:
    """A training-recipe fault: LeNet-5 on digits with every weight zero (always killed)."""
    return FaultRecipe(
        "digits-wci",
        "training_recipe",
        "digits",
        "lenet5",
        seed=1,
        overrides={"epochs": 3},
        operator="WCI",
        candidates=({"initializer": "zeros"},),
    )
