"""Mutation operators: what each changes, when it does not apply, and bad parameters."""

from __future__ import annotations

import pytest

from fixbench.faults import OPERATORS, OperatorNotApplicable, UnknownOperatorError, apply_operator, get_operator
from fixbench.zoo import Recipe, RecipeError, default_recipe

LENET = default_recipe("lenet5")  # adam 1e-3, relu, softmax, glorot_uniform, 8 epochs, batch 64

# operator, params, expected changes {field: new value}
CASES = [
    ("ACH", {"activation": "tanh"}, {"activation": "tanh"}),
    ("AAL", {"activation": "softmax"}, {"last_activation": "double_softmax"}),
    ("ARM", {}, {"activation": "linear"}),
    ("HNE", {"factor": 0.25}, {"epochs": 2}),
    ("HNE", {"epochs": 20}, {"epochs": 20}),
    ("HLR", {"factor": 100.0}, {"learning_rate": 0.1}),
    ("HLR", {"learning_rate": 5.0}, {"learning_rate": 5.0}),
    ("HBS", {"batch_size": 512}, {"batch_size": 512}),
    ("WCI", {"initializer": "ones"}, {"initializer": "ones"}),
    ("RAW", {"regularizer": "l1", "weight": 0.02}, {"regularizer": "l1", "regularization_weight": 0.02}),
    ("RCD", {"dropout": 0.9}, {"dropout": 0.9}),
    ("LCH", {"loss": "mse"}, {"loss": "mean_squared_error"}),
    ("OCH", {"optimizer": "sgd"}, {"optimizer": "sgd"}),
    ("TCL", {"fraction": 0.3}, {"label_noise": 0.3}),
    ("TRD", {"fraction": 0.5}, {"missing_data": 0.5}),
    ("TUD", {"fraction": 0.8}, {"unbalanced_data": 0.8}),
    ("TDD", {"fraction": 0.5}, {"duplicated_data": 0.5}),
    ("D1", {}, {"loss": "mean_absolute_error"}),
    ("D2", {}, {"last_activation": "relu"}),
    ("D3", {}, {"last_activation": "double_softmax"}),
    ("D4", {}, {"learning_rate": 0.1}),
    ("D6", {}, {"last_activation": "sigmoid"}),
    ("D7", {}, {"epochs": 1}),
    ("D8", {}, {"initializer": "zeros"}),
    ("D9", {"optimizer": "sgd"}, {"optimizer": "sgd"}),
]


@pytest.mark.parametrize(("name", "params", "expected"), CASES)
def test_operator_changes_exactly_its_fields(name, params, expected):
    mutant = apply_operator(name, LENET, params)
    changed = {field: new for field, _, new in LENET.diff(mutant)}
    assert changed == pytest.approx(expected)


def test_every_operator_has_a_case_and_d5_needs_normalised_input():
    covered = {name for name, _, _ in CASES} | {"D5"}
    assert covered == set(OPERATORS)
    normalised = LENET.replace(normalize_input=True)
    assert apply_operator("D5", normalised).normalize_input is False


@pytest.mark.parametrize(
    ("name", "recipe", "params", "reason"),
    [
        ("ACH", LENET, {"activation": "relu"}, "activation is already 'relu'"),
        ("ARM", LENET.replace(activation="linear"), {}, "already 'linear'"),
        ("AAL", LENET.replace(last_activation="sigmoid"), {"activation": "softmax"}, "cannot be expressed"),
        ("RAW", LENET, {"regularizer": "none"}, "no weight regularisation to remove"),
        ("D2", LENET.replace(last_activation="linear"), {}, "not softmax"),
        ("D5", LENET, {}, "does not normalise its input"),
        ("D7", LENET.replace(epochs=1), {}, "not fewer"),
        ("HNE", LENET, {"factor": 1.0}, "epochs is already 8"),
        ("TCL", LENET.replace(label_noise=0.3), {"fraction": 0.3}, "label_noise is already 0.3"),
        ("D1", LENET.replace(loss="hinge"), {}, "not the task's cross-entropy"),
    ],
)
def test_operator_that_does_not_apply_says_why(name, recipe, params, reason):
    with pytest.raises(OperatorNotApplicable, match=reason) as info:
        apply_operator(name, recipe, params)
    assert info.value.operator == name


def test_unknown_operator_and_unknown_parameter_are_named():
    with pytest.raises(UnknownOperatorError, match="'XYZ'.*known: ACH"):
        get_operator("XYZ")
    with pytest.raises(ValueError, match=r"operator HLR: unknown parameter\(s\) \['lr'\]"):
        apply_operator("HLR", LENET, {"lr": 1.0})
    with pytest.raises(ValueError, match="exactly one of learning_rate or factor"):
        apply_operator("HLR", LENET, {})


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("HLR", {"learning_rate": -1.0}, "learning_rate"),
        ("HBS", {"batch_size": 0}, "batch_size"),
        ("ACH", {"activation": "swish"}, "activation"),
        ("LCH", {"loss": "focal"}, "loss"),
        ("TCL", {"fraction": 1.5}, "label_noise"),
        ("RCD", {"dropout": 1.0}, "dropout"),
    ],
)
def test_out_of_range_mutation_names_the_recipe_field(name, params, field):
    with pytest.raises(RecipeError, match=f"^{field}:"):
        apply_operator(name, LENET, params)


def test_operator_rejects_a_non_recipe():
    with pytest.raises(TypeError, match="expected a Recipe"):
        apply_operator("ARM", LENET.to_dict())  # type: ignore[arg-type]
    assert isinstance(apply_operator("ARM", LENET), Recipe)
