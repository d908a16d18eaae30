"""Training-recipe mutation operators: a function Recipe → mutated Recipe.

Two catalogues share one registry:
- DeepCrime's operators (Humbatova et al., ISSTA 2021) that Kim et al. used — ACH, AAL, ARM,
  HNE, HLR, WCI, RAW, LCH, OCH — plus DeepCrime's batch-size, dropout and training-data
  operators (HBS, RCD, TCL, TRD, TUD) and one of ours, TDD (duplicated training data), which
  the recipe supports and DeepCrime's catalogue lacks;
- nine analogues of the DeepFD real faults (D1–D9), each a recipe bug with a known fix.

An operator that cannot change a recipe (the field already holds the value, the model has no
such layer, ...) raises `OperatorNotApplicable` saying why, so a mutant is never a silent copy
of its original. Values outside a field's range raise the zoo's `RecipeError` naming the field.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fixbench.faults.errors import OperatorNotApplicable, UnknownOperatorError
from fixbench.zoo import Recipe

Mutation = Callable[..., Recipe]


@dataclass(frozen=True)
class Operator:
    """One operator: its name, what it does, where it comes from and how it mutates."""

    name: str
    title: str
    source: str  # "deepcrime", "deepfd" (real-fault analogue) or "fixbench"
    mutate: Mutation

    @property
    def params(self) -> tuple[str, ...]:
        """The keyword parameters the operator takes (besides the recipe)."""
        return tuple(list(inspect.signature(self.mutate).parameters)[1:])

    def apply(self, recipe: Recipe, params: Mapping[str, Any] | None = None) -> Recipe:
        """The mutated recipe; unknown parameters and no-op mutations are refused."""
        if not isinstance(recipe, Recipe):
            raise TypeError(f"operator {self.name}: expected a Recipe, got {type(recipe).__name__}")
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ValueError(f"operator {self.name}: unknown parameter(s) {unknown}; it takes {list(self.params)}")
        mutant = self.mutate(recipe, **params)
        if not mutant.diff(recipe):
            raise OperatorNotApplicable(self.name, "the mutation leaves the recipe unchanged")
        return mutant


def _differs(op: str, name: str, current: Any, wanted: Any) -> None:
    if current == wanted:
        raise OperatorNotApplicable(op, f"{name} is already {wanted!r}")


# ---- DeepCrime: activations --------------------------------------------------------------------


def change_activation(recipe: Recipe, activation: str = "sigmoid") -> Recipe:
    """ACH: the hidden layers' activation replaced by another."""
    _differs("ACH", "activation", recipe.activation, activation)
    return recipe.replace(activation=activation)


def add_activation_layer(recipe: Recipe, activation: str = "softmax") -> Recipe:
    """AAL: an extra activation layer after the output layer.

    The recipe can express this where the output already has no activation (linear → the
    added one) or where a softmax is stacked on the softmax output (→ double_softmax); other
    stacks have no recipe spelling.
    """
    if recipe.last_activation == "linear":
        _differs("AAL", "last_activation", "linear", activation)
        return recipe.replace(last_activation=activation)
    if recipe.last_activation == "softmax" and activation == "softmax":
        return recipe.replace(last_activation="double_softmax")
    raise OperatorNotApplicable(
        "AAL",
        f"a {activation!r} layer after a {recipe.last_activation!r} output cannot be expressed by the recipe "
        "(only linear → any activation, or softmax → softmax)",
    )


def remove_activations(recipe: Recipe) -> Recipe:
    """ARM: the hidden layers' activation removed (made linear)."""
    _differs("ARM", "activation", recipe.activation, "linear")
    return recipe.replace(activation="linear")


# ---- DeepCrime: hyper-parameters ---------------------------------------------------------------


def _scaled(op: str, name: str, current: float, value: float | None, factor: float | None) -> float:
    if (value is None) == (factor is None):
        raise ValueError(f"operator {op}: give exactly one of {name} or factor")
    if factor is not None:
        if not factor > 0:
            raise ValueError(f"operator {op}: factor must be positive, got {factor!r}")
        return current * factor
    return value  # type: ignore[return-value]


def change_epochs(recipe: Recipe, epochs: int | None = None, factor: float | None = None) -> Recipe:
    """HNE: a different number of training epochs (a value, or the current one × factor)."""
    wanted = _scaled("HNE", "epochs", recipe.epochs, epochs, factor)
    wanted = max(1, round(wanted))
    _differs("HNE", "epochs", recipe.epochs, wanted)
    return recipe.replace(epochs=wanted)


def change_learning_rate(recipe: Recipe, learning_rate: float | None = None, factor: float | None = None) -> Recipe:
    """HLR: a different learning rate (a value, or the current one × factor)."""
    wanted = float(_scaled("HLR", "learning_rate", recipe.learning_rate, learning_rate, factor))
    _differs("HLR", "learning_rate", recipe.learning_rate, wanted)
    return recipe.replace(learning_rate=wanted)


def change_batch_size(recipe: Recipe, batch_size: int = 512) -> Recipe:
    """HBS: a different batch size."""
    _differs("HBS", "batch_size", recipe.batch_size, batch_size)
    return recipe.replace(batch_size=batch_size)


# ---- DeepCrime: weights, regularisation, loss, optimiser ---------------------------------------


def change_initializer(recipe: Recipe, initializer: str = "zeros") -> Recipe:
    """WCI: a different weight initialiser."""
    _differs("WCI", "initializer", recipe.initializer, initializer)
    return recipe.replace(initializer=initializer)


def alter_regularization(recipe: Recipe, regularizer: str = "l2", weight: float = 0.01) -> Recipe:
    """RAW: weight regularisation added (or altered, or removed with regularizer="none")."""
    if regularizer == "none":
        if recipe.regularizer == "none" or recipe.regularization_weight == 0:
            raise OperatorNotApplicable("RAW", "the recipe has no weight regularisation to remove")
        return recipe.replace(regularizer="none", regularization_weight=0.0)
    if recipe.regularizer == regularizer and recipe.regularization_weight == weight:
        raise OperatorNotApplicable("RAW", f"the recipe already uses {regularizer} with weight {weight!r}")
    return recipe.replace(regularizer=regularizer, regularization_weight=weight)


def change_dropout(recipe: Recipe, dropout: float = 0.8) -> Recipe:
    """RCD: a different dropout rate before the dense layers."""
    _differs("RCD", "dropout", recipe.dropout, dropout)
    return recipe.replace(dropout=dropout)


def change_loss(recipe: Recipe, loss: str = "mean_absolute_error") -> Recipe:
    """LCH: a different loss function."""
    _differs("LCH", "loss", recipe.loss, Recipe(architecture=recipe.architecture, loss=loss).loss)
    return recipe.replace(loss=loss)


def change_optimizer(recipe: Recipe, optimizer: str = "sgd") -> Recipe:
    """OCH: a different optimiser, keeping the learning rate tuned for the old one."""
    _differs("OCH", "optimizer", recipe.optimizer, optimizer)
    return recipe.replace(optimizer=optimizer)


# ---- DeepCrime: training data ------------------------------------------------------------------


def _data_fraction(op: str, name: str, recipe: Recipe, fraction: float) -> Recipe:
    _differs(op, name, getattr(recipe, name), float(fraction))
    return recipe.replace(**{name: fraction})


def change_labels(recipe: Recipe, fraction: float = 0.3) -> Recipe:
    """TCL: that fraction of the training labels replaced by another class."""
    return _data_fraction("TCL", "label_noise", recipe, fraction)


def remove_training_data(recipe: Recipe, fraction: float = 0.5) -> Recipe:
    """TRD: that fraction of the training samples dropped."""
    return _data_fraction("TRD", "missing_data", recipe, fraction)


def duplicate_training_data(recipe: Recipe, fraction: float = 0.5) -> Recipe:
    """TDD: that fraction of the training samples appended again (over-represented)."""
    return _data_fraction("TDD", "duplicated_data", recipe, fraction)


def unbalance_training_data(recipe: Recipe, fraction: float = 0.8) -> Recipe:
    """TUD: that fraction of the samples of the first half of the classes dropped."""
    return _data_fraction("TUD", "unbalanced_data", recipe, fraction)


# ---- DeepFD real-fault analogues (D1–D9) --------------------------------------------------------


def wrong_loss(recipe: Recipe, loss: str = "mean_absolute_error") -> Recipe:
    """D1: a loss that does not fit multi-class classification."""
    if recipe.loss not in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        raise OperatorNotApplicable("D1", f"the recipe's loss {recipe.loss!r} is not the task's cross-entropy")
    return change_loss(recipe, loss)


def _needs_softmax(op: str, recipe: Recipe) -> None:
    if recipe.last_activation != "softmax":
        raise OperatorNotApplicable(op, f"the output activation is {recipe.last_activation!r}, not softmax")


def softmax_missing(recipe: Recipe) -> Recipe:
    """D2: the output layer keeps the hidden activation instead of softmax (the copy-pasted
    `Dense(classes, activation=<hidden>)` bug)."""
    _needs_softmax("D2", recipe)
    hidden = recipe.activation if recipe.activation not in ("softmax", "linear") else "relu"
    return recipe.replace(last_activation=hidden)


def softmax_doubled(recipe: Recipe) -> Recipe:
    """D3: a softmax applied on top of the softmax output."""
    _needs_softmax("D3", recipe)
    return recipe.replace(last_activation="double_softmax")


def learning_rate_too_high(recipe: Recipe, factor: float = 100.0) -> Recipe:
    """D4: a learning rate far too high (the current one × factor)."""
    if factor <= 1:
        raise ValueError(f"operator D4: factor must be above 1, got {factor!r}")
    return change_learning_rate(recipe, factor=factor)


def unnormalised_input(recipe: Recipe) -> Recipe:
    """D5: the inputs reach the network without normalisation."""
    if not recipe.normalize_input:
        raise OperatorNotApplicable("D5", "the recipe does not normalise its input, so there is nothing to remove")
    return recipe.replace(normalize_input=False)


def sigmoid_output(recipe: Recipe) -> Recipe:
    """D6: a sigmoid last layer for a multi-class (softmax) task."""
    _needs_softmax("D6", recipe)
    return recipe.replace(last_activation="sigmoid")


def too_few_epochs(recipe: Recipe, epochs: int = 1) -> Recipe:
    """D7: training stopped after far too few epochs."""
    if epochs >= recipe.epochs:
        raise OperatorNotApplicable("D7", f"{epochs} epochs is not fewer than the recipe's {recipe.epochs}")
    return recipe.replace(epochs=epochs)


def zeros_initializer(recipe: Recipe) -> Recipe:
    """D8: every weight initialised to zero (symmetry is never broken)."""
    return change_initializer(recipe, "zeros")


def optimizer_lr_mismatch(recipe: Recipe, optimizer: str = "sgd", learning_rate: float | None = None) -> Recipe:
    """D9: an optimiser paired with a learning rate tuned for another (e.g. plain SGD at Adam's
    1e-3, or Adam at SGD's 0.1)."""
    _differs("D9", "optimizer", recipe.optimizer, optimizer)
    return recipe.replace(optimizer=optimizer, learning_rate=learning_rate or recipe.learning_rate)


OPERATORS: dict[str, Operator] = {
    op.name: op
    for op in (
        Operator("ACH", "change activation function", "deepcrime", change_activation),
        Operator("AAL", "add activation layer", "deepcrime", add_activation_layer),
        Operator("ARM", "remove activation function", "deepcrime", remove_activations),
        Operator("HNE", "change number of epochs", "deepcrime", change_epochs),
        Operator("HLR", "change learning rate", "deepcrime", change_learning_rate),
        Operator("HBS", "change batch size", "deepcrime", change_batch_size),
        Operator("WCI", "change weight initialisation", "deepcrime", change_initializer),
        Operator("RAW", "add / alter weight regularisation", "deepcrime", alter_regularization),
        Operator("RCD", "change dropout rate", "deepcrime", change_dropout),
        Operator("LCH", "change loss function", "deepcrime", change_loss),
        Operator("OCH", "change optimiser", "deepcrime", change_optimizer),
        Operator("TCL", "change labels of training data", "deepcrime", change_labels),
        Operator("TRD", "remove portion of training data", "deepcrime", remove_training_data),
        Operator("TUD", "unbalance training data", "deepcrime", unbalance_training_data),
        Operator("TDD", "duplicate portion of training data", "fixbench", duplicate_training_data),
        Operator("D1", "wrong loss for the task", "deepfd", wrong_loss),
        Operator("D2", "softmax missing on the output", "deepfd", softmax_missing),
        Operator("D3", "softmax applied twice", "deepfd", softmax_doubled),
        Operator("D4", "learning rate far too high", "deepfd", learning_rate_too_high),
        Operator("D5", "unnormalised input", "deepfd", unnormalised_input),
        Operator("D6", "sigmoid output for a multi-class task", "deepfd", sigmoid_output),
        Operator("D7", "too few epochs", "deepfd", too_few_epochs),
        Operator("D8", "zeros initialiser", "deepfd", zeros_initializer),
        Operator("D9", "optimiser / learning-rate mismatch", "deepfd", optimizer_lr_mismatch),
    )
}


def get_operator(name: str) -> Operator:
    """The operator called `name`; unknown names raise `UnknownOperatorError` listing the known."""
    try:
        return OPERATORS[name]
    except KeyError:
        raise UnknownOperatorError(f"unknown mutation operator {name!r}; known: {', '.join(OPERATORS)}") from None


def apply_operator(name: str, recipe: Recipe, params: Mapping[str, Any] | None = None) -> Recipe:
    """The recipe mutated by operator `name` with `params`."""
    return get_operator(name).apply(recipe, params)
