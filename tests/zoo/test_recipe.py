"""Recipe validation, conversions and diff."""

from __future__ import annotations

import json

import pytest

from fixbench.v1 import repair_pb2
from fixbench.zoo import ARCHITECTURES, FIELD_NAMES, Recipe, RecipeError, default_recipe


def test_fields_match_the_proto_message_by_name_and_order():
    proto_fields = [f.name for f in repair_pb2.TrainingRecipe.DESCRIPTOR.fields]
    assert list(FIELD_NAMES) == proto_fields


@pytest.mark.parametrize(
    ("changes", "field", "hint"),
    [
        ({"learning_rate": -0.1}, "learning_rate", "(0, 100]"),
        ({"learning_rate": float("nan")}, "learning_rate", "(0, 100]"),
        ({"batch_size": 0}, "batch_size", "[1, 65536]"),
        ({"batch_size": 32.5}, "batch_size", "integer"),
        ({"epochs": 0}, "epochs", "[1, 10000]"),
        ({"loss": "cross_entropy_typo"}, "loss", "categorical_crossentropy"),
        ({"optimizer": "lbfgs"}, "optimizer", "adam"),
        ({"activation": "gelu"}, "activation", "relu"),
        ({"last_activation": "gelu"}, "last_activation", "double_softmax"),
        ({"initializer": "xavier"}, "initializer", "glorot_uniform"),
        ({"regularizer": "l3"}, "regularizer", "l1_l2"),
        ({"regularization_weight": -1.0}, "regularization_weight", "[0, 10]"),
        ({"dropout": 1.0}, "dropout", "[0, 1)"),
        ({"hidden_units": (64, 0)}, "hidden_units", "[1, 65536]"),
        ({"hidden_units": "64"}, "hidden_units", "sequence"),
        ({"width_multiplier": 0.0}, "width_multiplier", "(0, 16]"),
        ({"normalize_input": "yes"}, "normalize_input", "true or false"),
        ({"label_noise": 1.5}, "label_noise", "[0, 1]"),
        ({"missing_data": 1.0}, "missing_data", "[0, 1)"),
        ({"duplicated_data": -0.1}, "duplicated_data", "[0, 1]"),
        ({"unbalanced_data": 2}, "unbalanced_data", "[0, 1]"),
        ({"architecture": "alexnet"}, "architecture", "lenet5"),
        ({"options": {"pool": "median"}}, "options.pool", "max"),
        ({"options": {"depth": "16"}}, "options.depth", "pool"),
        ({"options": {"pool": 2}}, "options.pool", "strings"),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(changes, field, hint):
    base = default_recipe("lenet5").to_dict()
    base.update(changes)
    with pytest.raises(RecipeError) as err:
        Recipe.from_dict(base)
    assert str(err.value).startswith(field)
    assert hint in str(err.value)


def test_unknown_field_is_named():
    with pytest.raises(RecipeError, match="learning_rte"):
        Recipe.from_dict({"learning_rte": 0.1})
    with pytest.raises(RecipeError, match="momentum"):
        default_recipe("mlp").replace(momentum=0.9)


def test_aliases_are_stored_canonically_and_integral_floats_accepted():
    r = default_recipe("mlp", loss="mse", batch_size=32.0, hidden_units=[8, 4])
    assert r.loss == "mean_squared_error"
    assert r.batch_size == 32 and isinstance(r.batch_size, int)
    assert r.hidden_units == (8, 4)
    assert r == default_recipe("mlp", loss="mean_squared_error", batch_size=32, hidden_units=(8, 4))


def test_recipe_is_immutable_and_hashable():
    r = default_recipe("resnet18", options={"blocks": "1,1"})
    with pytest.raises(AttributeError):
        r.learning_rate = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.options["blocks"] = "2,2"  # type: ignore[index]
    assert hash(r) == hash(default_recipe("resnet18", options={"blocks": "1,1"}))
    assert len({r, r.replace(epochs=3)}) == 2


def test_dict_round_trip_is_json_able():
    r = default_recipe("densenet121", options={"growth_rate": "12"}, hidden_units=(32,))
    text = json.dumps(r.to_dict())
    assert Recipe.from_dict(json.loads(text)) == r


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_proto_round_trip(architecture):
    r = default_recipe(architecture, label_noise=0.1, regularizer="l2", regularization_weight=1e-4)
    msg = r.to_proto()
    assert isinstance(msg, repair_pb2.TrainingRecipe)
    wire = repair_pb2.TrainingRecipe.FromString(msg.SerializeToString())
    assert Recipe.from_proto(wire) == r


def test_proto_options_survive_the_wire():
    r = default_recipe("vgg16", options={"depth": "11", "batch_norm": "false"})
    back = Recipe.from_proto(repair_pb2.TrainingRecipe.FromString(r.to_proto().SerializeToString()))
    assert dict(back.options) == {"depth": "11", "batch_norm": "false"}
    assert back.option("batch_norm") is False


def test_empty_proto_is_rejected_naming_the_first_field():
    with pytest.raises(RecipeError, match="^architecture"):
        Recipe.from_proto(repair_pb2.TrainingRecipe())


def test_diff_lists_changed_fields_in_order():
    a = default_recipe("lenet5")
    b = a.replace(learning_rate=0.5, epochs=3, options={"pool": "avg"})
    assert a.diff(b) == [
        ("learning_rate", 1e-3, 0.5),
        ("epochs", 8, 3),
        ("options", {}, {"pool": "avg"}),
    ]
    assert b.diff(a)[0] == ("learning_rate", 0.5, 1e-3)
    assert a.diff(a) == []


def test_default_recipe_rejects_unknown_architecture():
    with pytest.raises(RecipeError, match="architecture"):
        default_recipe("transformer")


def test_option_parses_defaults():
    assert default_recipe("densenet121").option("blocks") == (6, 12, 24, 16)
    assert default_recipe("textmlp").option("binarize") is True
    with pytest.raises(RecipeError, match="options"):
        default_recipe("mlp").option("depth")
