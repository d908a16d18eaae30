"""What an approach returns: the repaired model plus a structured diagnosis."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fixbench.v1 import repair_pb2


@dataclass(frozen=True)
class LocalisedWeight:
    """One scalar weight: ONNX initializer name, element index, suspiciousness score."""

    tensor: str
    index: Sequence[int]
    score: float = 0.0


@dataclass(frozen=True)
class LocalisedNeuron:
    """One neuron: layer name, unit/channel index, score."""

    layer: str
    index: int
    score: float = 0.0


@dataclass(frozen=True)
class RecipeChange:
    """One training-recipe field changed by a recipe-level approach."""

    field: str
    old: Any
    new: Any


@dataclass
class Diagnosis:
    """What the approach found wrong and what it changed. `repaired_recipe` may be a
    fixbench.zoo.Recipe, a TrainingRecipe message or None."""

    weights: list[LocalisedWeight] = field(default_factory=list)
    neurons: list[LocalisedNeuron] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    recipe_changes: list[RecipeChange] = field(default_factory=list)
    repaired_recipe: Any = None
    summary: str = ""

    def to_proto(self) -> repair_pb2.Diagnosis:
        msg = repair_pb2.Diagnosis(
            weights=[repair_pb2.LocalisedWeight(tensor=w.tensor, index=[int(i) for i in w.index], score=float(w.score)) for w in self.weights],
            neurons=[repair_pb2.LocalisedNeuron(layer=n.layer, index=int(n.index), score=float(n.score)) for n in self.neurons],
            layers=list(self.layers),
            recipe_changes=[
                repair_pb2.RecipeChange(field=c.field, old_value_json=json.dumps(c.old, default=str), new_value_json=json.dumps(c.new, default=str))
                for c in self.recipe_changes
            ],
            summary=self.summary,
        )
        recipe = self.repaired_recipe
        if recipe is not None:
            msg.repaired_recipe.CopyFrom(recipe if isinstance(recipe, repair_pb2.TrainingRecipe) else recipe.to_proto())
        return msg


@dataclass
class Outcome:
    """The result of `Approach.repair`. `model` is the repaired ONNX (ModelProto or bytes) or
    None when the approach produced nothing. The SDK decides REPAIRED vs NOT_REPAIRED itself
    (a model that fixes at least one failing repair input is REPAIRED) unless `not_repaired`
    is set, so that every approach is judged by the same rule."""

    model: Any = None
    diagnosis: Diagnosis = field(default_factory=Diagnosis)
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    not_repaired: bool = False
