"""BOHB (Falkner, Klein, Hutter, "BOHB: Robust and Efficient Hyperparameter Optimization at
Scale", ICML 2018) over the Kim et al. recipe space with epochs as the fidelity, as a proposer
for the SDK's trial engine. The model is the original's: hpbandster's BOHB config generator
(a TPE-style pair of KDEs per budget over a ConfigSpace, with a fraction of random configs),
the code Ray Tune's TuneBOHB wraps. The Hyperband brackets of successive halving around it
follow hpbandster's BOHB master; they run synchronously (a bracket's configs are drawn when it
starts, a rung is promoted once it has finished) so that a seed gives one search however many
trials run at once."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fixbench.sdk.trials import TrialResult, TrialSpec, recipe_cost, recipe_dimensions, recipe_from_point, trial_seed


def config_space(seed: int):
    """The Kim et al. space (without epochs, the fidelity) as a ConfigSpace."""
    import ConfigSpace as CS

    space = CS.ConfigurationSpace(seed=int(seed) % (2**31))
    for name, dim in recipe_dimensions(fidelity_epochs=True).items():
        d = dim.describe()
        if d["kind"] == "categorical":
            space.add(CS.CategoricalHyperparameter(name, list(d["choices"])))
        elif d["kind"] == "log_uniform":
            space.add(CS.UniformFloatHyperparameter(name, d["low"], d["high"], log=True))
        elif d["kind"] == "int_uniform":
            space.add(CS.UniformIntegerHyperparameter(name, d["low"], d["high"]))
        elif d["kind"] == "uniform":
            space.add(CS.UniformFloatHyperparameter(name, d["low"], d["high"]))
        else:  # pragma: no cover - the space has only these four kinds
            raise TypeError(f"dimension {name}: no ConfigSpace type for {d['kind']!r}")
    return space


def hyperband_budgets(min_budget: float, max_budget: float, eta: float) -> list[float]:
    """The geometric ladder of budgets of hpbandster's BOHB master, smallest first."""
    if not 0 < min_budget <= max_budget:
        raise ValueError(f"budgets: need 0 < min_budget <= max_budget, got {min_budget}, {max_budget}")
    if eta <= 1:
        raise ValueError(f"eta: expected a number above 1, got {eta}")
    steps = -int(np.log(min_budget / max_budget) / np.log(eta)) + 1
    return [float(b) for b in max_budget * np.power(eta, -np.linspace(steps - 1, 0, steps))]


def bracket(iteration: int, ladder: Sequence[float], eta: float) -> tuple[list[int], list[float]]:
    """(configs per rung, budget per rung) of Hyperband iteration `iteration`, as hpbandster's
    BOHB.get_next_iteration computes them: brackets cycle from most to fewest rungs."""
    steps = len(ladder)
    s = steps - 1 - (iteration % steps)
    n0 = int(np.floor(steps / (s + 1)) * eta**s)
    counts = [max(int(n0 * (eta ** (-k))), 1) for k in range(s + 1)]
    return counts, list(ladder[-s - 1:])


@dataclass
class _Job:
    """What hpbandster's config generator reads from a finished job."""

    id: tuple
    kwargs: dict
    result: dict | None
    exception: str | None = None
    timestamps: dict | None = None


class BohbProposer:
    """Each round is one rung of a Hyperband bracket: the first rung samples configs from the
    BOHB model at the bracket's smallest budget, later rungs promote the best 1/eta."""

    def __init__(self, base, train_samples: int, seed: int, min_epochs: int, max_epochs: int, eta: float = 3.0,
                 min_points_in_model: int | None = None, top_n_percent: int = 15, num_samples: int = 64,
                 random_fraction: float = 1 / 3, bandwidth_factor: float = 3.0, min_bandwidth: float = 1e-3):
        from hpbandster.optimizers.config_generators.bohb import BOHB as BohbModel

        self.base, self.train_samples, self.seed, self.eta = base, int(train_samples), int(seed), float(eta)
        self.ladder = hyperband_budgets(float(min_epochs), float(max_epochs), self.eta)
        self.space = config_space(seed)
        self.model = BohbModel(self.space, min_points_in_model=min_points_in_model, top_n_percent=top_n_percent,
                               num_samples=num_samples, random_fraction=random_fraction,
                               bandwidth_factor=bandwidth_factor, min_bandwidth=min_bandwidth)
        # hpbandster logs every sample at INFO/DEBUG; the service's log has the trials already.
        self.model.logger.setLevel(logging.WARNING)
        self.iteration = -1
        self.rung = 0
        self.counts: list[int] = []
        self.budgets: list[float] = []
        self.last: list[tuple[dict[str, Any], TrialResult]] = []
        self._configs: dict[int, dict[str, Any]] = {}

    def epochs_at(self, budget: float) -> int:
        return max(1, int(round(budget)))

    def propose(self, next_index: int) -> list[TrialSpec]:
        if self.iteration < 0 or self.rung + 1 >= len(self.counts) or not self.last:
            self.iteration += 1
            self.rung = 0
            self.counts, self.budgets = bracket(self.iteration, self.ladder, self.eta)
            with _seeded_numpy(self.seed, next_index):
                configs = [self._sample(self.budgets[0]) for _ in range(self.counts[0])]
        else:
            self.rung += 1
            # Successive halving: the best of the previous rung (loss, then trial index) go on.
            ranked = sorted(self.last, key=lambda cr: (_loss(cr[1]), cr[1].spec.index))
            configs = [config for config, _ in ranked[: self.counts[self.rung]]]
        budget = self.budgets[self.rung]
        specs = []
        for offset, config in enumerate(configs):
            index = next_index + offset
            recipe = recipe_from_point(self.base, config, epochs=self.epochs_at(budget))
            self._configs[index] = config
            specs.append(TrialSpec(index, {"recipe": recipe.to_dict()}, trial_seed(self.seed, index),
                                   recipe_cost(recipe, self.train_samples),
                                   {"bracket": self.iteration, "rung": self.rung, "budget_epochs": self.epochs_at(budget)}))
        return specs

    def _sample(self, budget: float) -> dict[str, Any]:
        config, _info = self.model.get_config(budget)
        return {k: _plain(v) for k, v in dict(config).items()}

    def observe(self, results: Sequence[TrialResult]) -> None:
        self.last = []
        for result in results:
            config = self._configs[result.spec.index]
            budget = self.budgets[self.rung]
            loss = _loss(result)
            self.model.new_result(_Job((self.iteration, self.rung, result.spec.index),
                                       {"config": config, "budget": budget}, {"loss": loss, "info": {}}))
            self.last.append((config, result))


def _loss(result: TrialResult) -> float:
    """BOHB minimises 1 - validation accuracy; a failed trial counts as accuracy 0."""
    return 1.0 - (result.score if result.score is not None else 0.0)


@contextlib.contextmanager
def _seeded_numpy(seed: int, index: int):
    """hpbandster samples with numpy's global generator: seed it from (seed, round) and restore it."""
    state = np.random.get_state()
    np.random.seed(int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0]))
    try:
        yield
    finally:
        np.random.set_state(state)


def default_epoch_range(base, eta: float, min_epochs: int = 0, max_epochs: int = 0) -> tuple[int, int]:
    """(min, max) epochs of the fidelity: max defaults to the top of Kim et al.'s epochs range
    (1.3 × the faulty recipe's, at least one more), min to max / eta² (two halvings), at least 1."""
    top = max_epochs or max(base.epochs + 1, round(base.epochs * 1.3))
    low = min_epochs or max(1, int(math.floor(top / eta**2)))
    if low > top:
        raise ValueError(f"min_epochs {low} exceeds max_epochs {top}")
    return low, top


def _plain(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.str_):
        return str(value)
    return value
