"""Model zoo: training recipes, architectures and the trainer (the things faults mutate).

from fixbench.zoo import default_recipe, train
result = train(default_recipe("lenet5"), (x_train, y_train), (x_valid, y_valid), seed=0)
result.onnx_bytes, result.valid_accuracy, result.history
"""

from fixbench.zoo.architectures import ZooModel, build_model
from fixbench.zoo.choices import (
    ACTIVATIONS,
    ARCHITECTURES,
    INITIALIZERS,
    LAST_ACTIVATIONS,
    LOSSES,
    OPTIMIZERS,
    REGULARIZERS,
)
from fixbench.zoo.defaults import default_recipe
from fixbench.zoo.recipe import FIELD_NAMES, Recipe, RecipeError
from fixbench.zoo.search_space import SEARCH_SPACE, SEARCHED_FIELDS, describe_search_space, sample_recipe
from fixbench.zoo.train import TrainingDiverged, TrainResult, train

__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "FIELD_NAMES",
    "INITIALIZERS",
    "LAST_ACTIVATIONS",
    "LOSSES",
    "OPTIMIZERS",
    "REGULARIZERS",
    "SEARCH_SPACE",
    "SEARCHED_FIELDS",
    "Recipe",
    "RecipeError",
    "TrainResult",
    "TrainingDiverged",
    "ZooModel",
    "build_model",
    "default_recipe",
    "describe_search_space",
    "sample_recipe",
    "train",
]
