"""The seven optimisers of the search space, with Keras's default hyper-parameters.

Keras defaults differ from torch's in a few places (RMSprop's decay 0.9 vs 0.99, epsilon
1e-7 vs 1e-8, Adadelta's rho, Adagrad's initial accumulator); a recipe names a Keras
optimiser, so we match Keras rather than torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

OptimizerFactory = Callable[[Iterable[torch.Tensor], float], torch.optim.Optimizer]

OPTIMIZER_FACTORIES: dict[str, OptimizerFactory] = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "rmsprop": lambda params, lr: torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7),
    "adagrad": lambda params, lr: torch.optim.Adagrad(params, lr=lr, initial_accumulator_value=0.1, eps=1e-7),
    "adadelta": lambda params, lr: torch.optim.Adadelta(params, lr=lr, rho=0.95, eps=1e-7),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr, eps=1e-7),
    "adamax": lambda params, lr: torch.optim.Adamax(params, lr=lr, eps=1e-7),
    "nadam": lambda params, lr: torch.optim.NAdam(params, lr=lr, eps=1e-7),
}


def make_optimizer(name: str, params: Iterable[torch.Tensor], learning_rate: float) -> torch.optim.Optimizer:
    """A torch optimiser for the recipe's optimizer name and learning rate."""
    try:
        factory = OPTIMIZER_FACTORIES[name]
    except KeyError:
        raise ValueError(f"optimizer: unknown optimiser {name!r}; known: {sorted(OPTIMIZER_FACTORIES)}") from None
    return factory(params, learning_rate)
