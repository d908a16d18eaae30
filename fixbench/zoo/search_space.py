"""The training-recipe search space of Kim et al. (ICST 2023), as data.

Recipe-level repairers (Random, HEBO, BOHB, AutoTrainer) draw from or list these dimensions:
loss (13), optimiser (7), learning rate log-uniform in [1e-6, 10], activation (11),
initialiser (13), batch size 16–512, epochs ×1.1–1.3 of the faulty recipe's, units per dense
layer and number of dense layers. Every categorical value is implemented by the trainer.
The architecture, last activation, regularisation, dropout, data fields and options are not
part of the space: a sampled recipe keeps the base recipe's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fixbench.zoo.choices import ACTIVATIONS, INITIALIZERS, LOSSES, OPTIMIZERS
from fixbench.zoo.recipe import Recipe, RecipeError


@dataclass(frozen=True)
class Categorical:
    """One of a fixed list of names."""

    choices: tuple[str, ...]

    def sample(self, rng: np.random.Generator) -> str:
        return self.choices[int(rng.integers(len(self.choices)))]

    def describe(self) -> dict[str, Any]:
        return {"kind": "categorical", "choices": list(self.choices)}


@dataclass(frozen=True)
class LogUniform:
    """A float whose logarithm is uniform in [log low, log high]."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))

    def describe(self) -> dict[str, Any]:
        return {"kind": "log_uniform", "low": self.low, "high": self.high}


@dataclass(frozen=True)
class IntUniform:
    """An integer uniform in [low, high] (both included)."""

    low: int
    high: int

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))

    def describe(self) -> dict[str, Any]:
        return {"kind": "int_uniform", "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Uniform:
    """A float uniform in [low, high]."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def describe(self) -> dict[str, Any]:
        return {"kind": "uniform", "low": self.low, "high": self.high}


# Dimension name → distribution. "epochs" is a factor applied to the base recipe's epochs;
# "layers" and "units" together give hidden_units (layers × units drawn per layer).
SEARCH_SPACE: dict[str, Categorical | LogUniform | IntUniform | Uniform] = {
    "loss": Categorical(LOSSES),
    "optimizer": Categorical(OPTIMIZERS),
    "learning_rate": LogUniform(1e-6, 10.0),
    "activation": Categorical(ACTIVATIONS),
    "initializer": Categorical(INITIALIZERS),
    "batch_size": IntUniform(16, 512),
    "epochs": Uniform(1.1, 1.3),
    "layers": IntUniform(1, 4),
    "units": IntUniform(16, 512),
}

# The recipe fields a sampled recipe may change; "hidden_units" comes from layers + units.
SEARCHED_FIELDS: tuple[str, ...] = (
    "loss",
    "optimizer",
    "learning_rate",
    "activation",
    "initializer",
    "batch_size",
    "epochs",
    "hidden_units",
)


def describe_search_space() -> dict[str, dict[str, Any]]:
    """The space as JSON-able data, for a repairer's Describe or a report."""
    return {name: dim.describe() for name, dim in SEARCH_SPACE.items()}


def sample_recipe(base: Recipe, rng: np.random.Generator, fields: Iterable[str] | None = None) -> Recipe:
    """A random recipe from the space around `base` (same architecture), drawn with `rng`.

    `fields` restricts which recipe fields are drawn (default: all of SEARCHED_FIELDS); the
    others keep the base's values. Epochs become round(base.epochs × U(1.1, 1.3)), at least
    base.epochs + 1 so the factor always adds training.
    """
    if not isinstance(base, Recipe):
        raise TypeError(f"base: expected a Recipe, got {type(base).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    chosen = SEARCHED_FIELDS if fields is None else tuple(fields)
    unknown = sorted(set(chosen) - set(SEARCHED_FIELDS))
    if unknown:
        raise RecipeError(f"fields: {unknown} are not in the search space; searchable: {list(SEARCHED_FIELDS)}")
    changes: dict[str, Any] = {}
    # Draw in a fixed order, whatever the order of `fields`, so a seed means one recipe.
    for name in SEARCHED_FIELDS:
        if name not in chosen:
            continue
        if name == "epochs":
            factor = SEARCH_SPACE["epochs"].sample(rng)
            changes["epochs"] = min(10000, max(base.epochs + 1, round(base.epochs * factor)))
        elif name == "hidden_units":
            layers = SEARCH_SPACE["layers"].sample(rng)
            changes["hidden_units"] = tuple(SEARCH_SPACE["units"].sample(rng) for _ in range(layers))
        else:
            changes[name] = SEARCH_SPACE[name].sample(rng)
    return base.replace(**changes)
