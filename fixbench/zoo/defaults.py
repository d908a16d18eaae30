"""Sensible default recipes per architecture, sized for CPU training.

The image CNNs are width-reduced versions of the paper models (width_multiplier < 1) so that
a few thousand 32×32 images train in about a minute on a couple of CPU cores; pass
`width_multiplier=1.0` (and larger `options`) for the full-size models.
"""

from __future__ import annotations

from typing import Any

from fixbench.zoo.choices import ARCHITECTURES
from fixbench.zoo.recipe import Recipe, RecipeError

_COMMON: dict[str, Any] = {
    "loss": "categorical_crossentropy",
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "activation": "relu",
    "last_activation": "softmax",
    "regularizer": "none",
    "regularization_weight": 0.0,
}

_PER_ARCHITECTURE: dict[str, dict[str, Any]] = {
    "lenet5": {
        "batch_size": 64,
        "epochs": 8,
        "initializer": "glorot_uniform",
        "hidden_units": (120, 84),
        "width_multiplier": 1.0,
        "dropout": 0.0,
        "normalize_input": False,
    },
    "mlp": {
        "batch_size": 64,
        "epochs": 20,
        "initializer": "glorot_uniform",
        "hidden_units": (64, 32),
        "width_multiplier": 1.0,
        "dropout": 0.0,
        "normalize_input": True,
    },
    "textmlp": {
        "batch_size": 32,
        "epochs": 5,
        "initializer": "glorot_uniform",
        "hidden_units": (256,),
        "width_multiplier": 1.0,
        "dropout": 0.5,
        "normalize_input": False,
    },
    "vgg16": {
        "batch_size": 64,
        "epochs": 10,
        "initializer": "he_uniform",
        "hidden_units": (64,),
        "width_multiplier": 0.125,
        "dropout": 0.3,
        "normalize_input": True,
    },
    "resnet18": {
        "batch_size": 64,
        "epochs": 8,
        "initializer": "he_uniform",
        "hidden_units": (),
        "width_multiplier": 0.125,
        "dropout": 0.0,
        "normalize_input": True,
    },
    "facenet": {
        "batch_size": 64,
        "epochs": 10,
        "initializer": "he_uniform",
        "hidden_units": (64,),
        "width_multiplier": 0.5,
        "dropout": 0.3,
        "normalize_input": True,
    },
    "densenet121": {
        "batch_size": 64,
        "epochs": 8,
        "initializer": "he_uniform",
        "hidden_units": (),
        "width_multiplier": 0.25,
        "dropout": 0.0,
        "normalize_input": True,
        # DenseNet-121 is the ImageNet subject: its ImageNet stem (stride 4) also keeps the
        # 58 dense layers cheap enough for CPU training on 32×32 images.
        "options": {"stem": "imagenet"},
    },
}


def default_recipe(architecture: str, **overrides: Any) -> Recipe:
    """The default recipe of an architecture, with any fields overridden (validated)."""
    if architecture not in _PER_ARCHITECTURE:
        raise RecipeError(f"architecture: {architecture!r} is not in the zoo; choose one of {list(ARCHITECTURES)}")
    if "architecture" in overrides:
        raise RecipeError("architecture: pass it as the first argument, not as an override")
    base = Recipe(architecture=architecture, **_COMMON, **_PER_ARCHITECTURE[architecture])
    return base.replace(**overrides) if overrides else base
