"""The pieces of Kim et al.'s random recipe search that do not need the gRPC service: the
seeded trial plan, one trial (train + score on validation), and the recipe diff that becomes
the diagnosis. Kept apart from `approach.py` so that tests can call them directly."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fixbench.sdk import Predictor, RecipeChange
from fixbench.sdk.recipes import Recipe, TrainingDiverged, TrainResult, sample_recipe, train

# Training seeds stay below 2**31 so that every framework accepts them.
_SEED_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class Trial:
    """One planned training run: the recipe, the seed it trains with, and whether it is the
    reference run (the faulty recipe itself, retrained with a fresh seed)."""

    index: int
    recipe: Recipe
    seed: int
    reference: bool = False


@dataclass
class TrialOutcome:
    """What one trial produced. `valid_accuracy` is None when the trial yielded no usable
    model (it diverged to non-finite weights, or its outputs are NaN/Inf on validation)."""

    trial: Trial
    valid_accuracy: float | None
    status: str
    seconds: float
    result: TrainResult | None = None

    @property
    def failed(self) -> bool:
        return self.valid_accuracy is None


def iter_trials(base: Recipe, rng: np.random.Generator, reference: bool = False) -> Iterator[Trial]:
    """The endless, seeded sequence of trials of a random search starting from `base`.

    Recipes and training seeds come from separate child streams of `rng`, and the reference
    run from a third, so that switching the reference on or off leaves the sampled recipes and
    their seeds unchanged (trial k of one plan is trial k+1 of the other).
    """
    if not isinstance(base, Recipe):
        raise TypeError(f"base: expected a fixbench.zoo.Recipe, got {type(base).__name__}")
    recipe_rng, seed_rng, reference_rng = rng.spawn(3)
    index = 0
    if reference:
        yield Trial(0, base, int(reference_rng.integers(_SEED_LIMIT)), reference=True)
        index = 1
    while True:
        recipe = sample_recipe(base, recipe_rng)
        yield Trial(index, recipe, int(seed_rng.integers(_SEED_LIMIT)))
        index += 1


def plan_trials(base: Recipe, seed: int, n: int, reference: bool = False) -> list[Trial]:
    """The first `n` trials a search with job seed `seed` runs (what `RandomRecipe.repair`
    follows when it is handed `numpy.random.default_rng(seed)` as `ctx.rng`)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n: expected a non-negative number of trials, got {n!r}")
    return list(itertools.islice(iter_trials(base, np.random.default_rng(int(seed)), reference), int(n)))


def scored_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy where a row with any NaN/Inf score counts as wrong (argmax of NaN is meaningless)."""
    if len(labels) == 0:
        raise ValueError("labels: the validation split is empty, so no accuracy can be measured")
    if scores.ndim != 2 or len(scores) != len(labels):
        raise ValueError(f"scores: expected shape ({len(labels)}, classes), got {scores.shape}")
    finite = np.isfinite(scores).all(axis=1)
    correct = (scores.argmax(axis=1) == labels) & finite
    return float(correct.mean())


def run_trial(
    trial: Trial,
    train_split: tuple[np.ndarray, np.ndarray],
    valid_split: tuple[np.ndarray, np.ndarray],
    num_classes: int | None,
    deadline: float | None,
) -> TrialOutcome:
    """Trains `trial.recipe` on the training split as given (no extra preprocessing: the model
    must take exactly the input the splits hold) and scores its ONNX export on validation.

    A run whose weights become non-finite (`TrainingDiverged`) or whose outputs are NaN/Inf on
    validation is a failed trial, not an error: random search samples many hopeless recipes.
    """
    started = time.monotonic()
    try:
        result = train(
            trial.recipe, train_split, valid_split, seed=trial.seed, deadline=deadline, num_classes=num_classes
        )
    except TrainingDiverged:
        return TrialOutcome(trial, None, "diverged", time.monotonic() - started)
    x_valid, y_valid = valid_split
    # Scored on the exported ONNX rather than the torch module: that is the artifact returned.
    scores = Predictor(result.onnx_bytes).scores(x_valid)
    if not np.isfinite(scores).all():
        return TrialOutcome(trial, None, "non-finite outputs", time.monotonic() - started)
    accuracy = scored_accuracy(scores, y_valid)
    return TrialOutcome(trial, accuracy, result.stop_reason, time.monotonic() - started, result)


def recipe_changes(base: Recipe, repaired: Recipe) -> list[RecipeChange]:
    """The fields the search changed, as JSON-able diagnosis entries."""
    return [RecipeChange(field, _jsonable(old), _jsonable(new)) for field, old, new in base.diff(repaired)]


def describe_changes(changes: list[RecipeChange]) -> str:
    """One line such as 'optimizer sgd -> adam, learning_rate 5 -> 0.00123'."""
    return ", ".join(f"{c.field} {_short(c.old)} -> {_short(c.new)}" for c in changes) or "no field changed"


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "items"):
        return dict(value)
    return value


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
