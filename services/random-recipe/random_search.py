"""The pieces of Kim et al.'s random recipe search that do not need the gRPC service: the
seeded trial plan, one trial (train + score on validation), and the recipe diff that becomes
the diagnosis. Kept apart from `approach.py` so that tests can call them directly. Trials run
on the SDK's trial engine (`fixbench.sdk.trials`: serial, or Ray Tune locally or on a cluster)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fixbench.sdk import RecipeChange
from fixbench.sdk.recipes import Recipe, TrainResult, sample_recipe, train
from fixbench.sdk.trials import SEED_LIMIT as _SEED_LIMIT
from fixbench.sdk.trials import RecipeData, TrialResult, TrialSpec, recipe_cost, recipe_trial, scored_accuracy

__all__ = ["RandomProposer", "Trial", "TrialOutcome", "describe_changes", "iter_trials", "plan_trials",
           "recipe_changes", "run_trial", "scored_accuracy", "trial_function"]


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


class RandomProposer:
    """The trial plan of `iter_trials` as rounds for the SDK's trial engine. Random search does
    not learn from results, so a round is just the next `round_size` trials of the plan; the
    engine admits them in index order, so the trials run do not depend on the round size."""

    def __init__(self, base: Recipe, rng: np.random.Generator, train_samples: int, reference: bool = False,
                 round_size: int = 1):
        self._plan = iter_trials(base, rng, reference)
        self._train_samples = int(train_samples)
        self._round_size = max(1, int(round_size))

    def propose(self, next_index: int) -> list[TrialSpec]:
        return [to_spec(next(self._plan), self._train_samples) for _ in range(self._round_size)]

    def observe(self, results) -> None:
        pass  # random search does not learn


def to_spec(trial: Trial, train_samples: int) -> TrialSpec:
    return TrialSpec(trial.index, {"recipe": trial.recipe.to_dict()}, trial.seed,
                     recipe_cost(trial.recipe, train_samples), {"reference": trial.reference})


def from_spec(spec: TrialSpec) -> Trial:
    return Trial(spec.index, Recipe.from_dict(spec.config["recipe"]), spec.seed, bool(spec.tag.get("reference")))


def trial_function(spec: TrialSpec, data: RecipeData, deadline_wall=None, should_stop=None, report=None,
                   threads: int = 1) -> TrialResult:
    """One trial through the SDK's recipe trial, with this module's `train` (looked up at call
    time, so that tests can make it diverge)."""
    return recipe_trial(spec, data, deadline_wall, should_stop, report, threads, train_fn=train)


def outcome_of(result: TrialResult) -> TrialOutcome:
    return TrialOutcome(from_spec(result.spec), result.score, result.status, result.seconds, result.payload)


def run_trial(
    trial: Trial,
    train_split: tuple[np.ndarray, np.ndarray],
    valid_split: tuple[np.ndarray, np.ndarray],
    num_classes: int | None,
    deadline: float | None,
) -> TrialOutcome:
    """Trains `trial.recipe` on the training split as given (no extra preprocessing: the model
    must take exactly the input the splits hold) and scores its ONNX export on validation;
    `deadline` is a time.monotonic() value. A run whose weights become non-finite or whose
    outputs are NaN/Inf on validation is a failed trial, not an error."""
    deadline_wall = None if deadline is None else time.time() + (deadline - time.monotonic())
    data = RecipeData(train_split, valid_split, num_classes)
    return outcome_of(trial_function(to_spec(trial, len(train_split[1])), data, deadline_wall))


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
