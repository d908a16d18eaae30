"""The training recipe: every knob the trainer obeys, validated on construction.

`Recipe` mirrors the proto message `fixbench.v1.TrainingRecipe` field by field (same names,
same order), so a recipe crosses the contract without a translation table. It is the thing
training-recipe faults mutate and recipe-level repairers search over.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fixbench.zoo.choices import (
    ACTIVATIONS,
    ARCHITECTURES,
    INITIALIZERS,
    LAST_ACTIVATIONS,
    LOSS_ALIASES,
    LOSSES,
    OPTIMIZERS,
    REGULARIZERS,
)
from fixbench.zoo.options import ARCHITECTURE_OPTIONS


class RecipeError(ValueError):
    """A recipe field that is unknown or holds a value outside its allowed set or range."""


@dataclass(frozen=True)
class Recipe:
    """A training recipe (field names and order = proto `fixbench.v1.TrainingRecipe`).

    Construction validates every field and raises `RecipeError` naming the first bad one.
    `options` is stored read-only; `hidden_units` as a tuple.
    """

    architecture: str = "mlp"
    loss: str = "categorical_crossentropy"
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 8
    activation: str = "relu"
    last_activation: str = "softmax"
    initializer: str = "he_uniform"
    regularizer: str = "none"
    regularization_weight: float = 0.0
    dropout: float = 0.0
    hidden_units: tuple[int, ...] = (128,)
    width_multiplier: float = 1.0
    normalize_input: bool = False
    label_noise: float = 0.0
    missing_data: float = 0.0
    duplicated_data: float = 0.0
    unbalanced_data: float = 0.0
    options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in _validated(self).items():
            object.__setattr__(self, name, value)

    def __hash__(self) -> int:
        # options is a mapping, which the generated hash could not handle.
        return hash(tuple((f, _freeze(getattr(self, f))) for f in FIELD_NAMES))

    # ---- conversions -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """A recipe from a mapping (e.g. parsed JSON/YAML); missing fields take the defaults."""
        if not isinstance(data, Mapping):
            raise RecipeError(f"recipe must be a mapping of field names to values, got {type(data).__name__}")
        unknown = sorted(set(data) - set(FIELD_NAMES))
        if unknown:
            raise RecipeError(f"unknown recipe field(s) {unknown}; known fields: {list(FIELD_NAMES)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (lists for hidden_units, a plain dict for options)."""
        out: dict[str, Any] = {}
        for name in FIELD_NAMES:
            value = getattr(self, name)
            if name == "hidden_units":
                value = list(value)
            elif name == "options":
                value = dict(value)
            out[name] = value
        return out

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed (validated like a new recipe)."""
        unknown = sorted(set(changes) - set(FIELD_NAMES))
        if unknown:
            raise RecipeError(f"unknown recipe field(s) {unknown}; known fields: {list(FIELD_NAMES)}")
        return dataclasses.replace(self, **changes)

    def diff(self, other: Recipe) -> list[tuple[str, Any, Any]]:
        """(field, value in self, value in other) for every field that differs, in field order."""
        if not isinstance(other, Recipe):
            raise TypeError(f"can only diff against a Recipe, got {type(other).__name__}")
        changes = []
        for name in FIELD_NAMES:
            old, new = getattr(self, name), getattr(other, name)
            if name == "options":
                old, new = dict(old), dict(new)
            if old != new:
                changes.append((name, old, new))
        return changes

    def to_proto(self):
        """The recipe as a `fixbench.v1.TrainingRecipe` message."""
        from fixbench.v1 import repair_pb2

        values = self.to_dict()
        options = values.pop("options")
        msg = repair_pb2.TrainingRecipe(**values)
        msg.options.update(options)
        return msg

    @classmethod
    def from_proto(cls, msg) -> Recipe:
        """A recipe from a `fixbench.v1.TrainingRecipe` message (validated: proto3 has no
        "unset", so an empty field is read as its empty value and rejected where invalid)."""
        return cls(
            **{name: getattr(msg, name) for name in FIELD_NAMES if name not in ("hidden_units", "options")},
            hidden_units=tuple(msg.hidden_units),
            options=dict(msg.options),
        )

    # ---- architecture options ----------------------------------------------------------
    def option(self, name: str) -> Any:
        """The parsed value of a declared option of this recipe's architecture (default if unset)."""
        specs = ARCHITECTURE_OPTIONS[self.architecture]
        if name not in specs:
            raise RecipeError(f"options: {self.architecture} has no option {name!r}; declared: {sorted(specs)}")
        return specs[name].parse(self.options.get(name, specs[name].default))


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Recipe))


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted(value.items()))
    return value


# ---- validation ----------------------------------------------------------------------------


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise RecipeError(f"{name}: {value!r} is not allowed; choose one of {list(allowed)}")
    return value


def _number(
    name: str,
    value: Any,
    lo: float,
    hi: float,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RecipeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    value = float(value)
    lo_ok = value > lo if lo_open else value >= lo
    hi_ok = value < hi if hi_open else value <= hi
    if not (math.isfinite(value) and lo_ok and hi_ok):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise RecipeError(f"{name}: {value!r} is out of range; allowed {interval}")
    return value


def _integer(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        # Integral floats (e.g. 64.0 from JSON or YAML) are accepted; 64.5 is not.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise RecipeError(f"{name}: expected an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise RecipeError(f"{name}: {value} is out of range; allowed integers in [{lo}, {hi}]")
    return value


def _validated(r: Recipe) -> dict[str, Any]:
    """Every field checked and normalised (aliases resolved, tuples and read-only options)."""
    out: dict[str, Any] = {}
    out["architecture"] = _choice("architecture", r.architecture, ARCHITECTURES)
    loss = LOSS_ALIASES.get(r.loss, r.loss) if isinstance(r.loss, str) else r.loss
    out["loss"] = _choice("loss", loss, LOSSES)
    out["optimizer"] = _choice("optimizer", r.optimizer, OPTIMIZERS)
    out["learning_rate"] = _number("learning_rate", r.learning_rate, 0.0, 100.0, lo_open=True)
    out["batch_size"] = _integer("batch_size", r.batch_size, 1, 65536)
    out["epochs"] = _integer("epochs", r.epochs, 1, 10000)
    out["activation"] = _choice("activation", r.activation, ACTIVATIONS)
    out["last_activation"] = _choice("last_activation", r.last_activation, LAST_ACTIVATIONS)
    out["initializer"] = _choice("initializer", r.initializer, INITIALIZERS)
    out["regularizer"] = _choice("regularizer", r.regularizer, REGULARIZERS)
    out["regularization_weight"] = _number("regularization_weight", r.regularization_weight, 0.0, 10.0)
    out["dropout"] = _number("dropout", r.dropout, 0.0, 1.0, hi_open=True)
    units = r.hidden_units
    if isinstance(units, (str, bytes)) or not hasattr(units, "__iter__"):
        raise RecipeError(f"hidden_units: expected a sequence of integers, got {units!r}")
    units = tuple(_integer("hidden_units", u, 1, 65536) for u in units)
    if len(units) > 16:
        raise RecipeError(f"hidden_units: {len(units)} dense layers; allowed 0 to 16")
    out["hidden_units"] = units
    out["width_multiplier"] = _number("width_multiplier", r.width_multiplier, 0.0, 16.0, lo_open=True)
    if not isinstance(r.normalize_input, bool):
        raise RecipeError(f"normalize_input: expected true or false, got {r.normalize_input!r}")
    out["normalize_input"] = r.normalize_input
    out["label_noise"] = _number("label_noise", r.label_noise, 0.0, 1.0)
    # At least one training sample must survive.
    out["missing_data"] = _number("missing_data", r.missing_data, 0.0, 1.0, hi_open=True)
    out["duplicated_data"] = _number("duplicated_data", r.duplicated_data, 0.0, 1.0)
    out["unbalanced_data"] = _number("unbalanced_data", r.unbalanced_data, 0.0, 1.0)
    out["options"] = _validated_options(out["architecture"], r.options)
    return out


def _validated_options(architecture: str, options: Any) -> Mapping[str, str]:
    if not isinstance(options, Mapping):
        raise RecipeError(f"options: expected a mapping of strings to strings, got {type(options).__name__}")
    specs = ARCHITECTURE_OPTIONS[architecture]
    clean: dict[str, str] = {}
    for key in sorted(options):
        value = options[key]
        if key not in specs:
            raise RecipeError(
                f"options.{key}: unknown option for architecture {architecture}; declared: {sorted(specs)}"
            )
        if not isinstance(value, str):
            raise RecipeError(f"options.{key}: values are strings, got {type(value).__name__} {value!r}")
        try:
            specs[key].parse(value)
        except ValueError as exc:
            raise RecipeError(f"options.{key}: {exc}") from None
        clean[key] = value
    return types.MappingProxyType(clean)
