"""The model zoo: torch modules built from a recipe, an input shape and a class count.

Every model is `ZooModel`: optional in-graph input normalisation → architecture body
(ending in class logits) → the recipe's last activation. Images are NCHW. Channel widths
scale with `width_multiplier`; dense head = `hidden_units` (dropout before each dense layer)
then the class layer. Defaults are sized for CPU training (see `defaults.default_recipe`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fixbench.zoo.layers import Normalize, activation, clip01, initialize
from fixbench.zoo.recipe import Recipe


class ZooModel(nn.Module):
    """normalise (optional) → body → last activation."""

    def __init__(self, body: nn.Module, last_activation: str, normalize: nn.Module | None = None):
        super().__init__()
        self.normalize = normalize if normalize is not None else nn.Identity()
        self.body = body
        self.last = activation(last_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.body(self.normalize(x)))


def _width(channels: int, multiplier: float) -> int:
    return max(1, round(channels * multiplier))


def dense_head(in_features: int, recipe: Recipe, num_classes: int) -> nn.Sequential:
    """Flattened features → hidden dense layers (each preceded by dropout) → class logits."""
    layers: list[nn.Module] = []
    width = in_features
    for units in recipe.hidden_units:
        if recipe.dropout > 0:
            layers.append(nn.Dropout(recipe.dropout))
        layers += [nn.Linear(width, units), activation(recipe.activation)]
        width = units
    if recipe.dropout > 0:
        layers.append(nn.Dropout(recipe.dropout))
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _features_out(features: nn.Module, input_shape: Sequence[int]) -> int:
    """Flattened size of `features` on one input (computed, so any image size works)."""
    with torch.no_grad():
        was = features.training
        features.eval()
        out = features(torch.zeros(1, *input_shape))
        features.train(was)
    return int(np.prod(out.shape[1:]))


def _image_shape(name: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3 or any(int(d) < 1 for d in input_shape):
        raise ValueError(f"input_shape: {name} needs images (channels, height, width), got {tuple(input_shape)}")
    return int(input_shape[0]), int(input_shape[1]), int(input_shape[2])


# ---- LeNet-5 ---------------------------------------------------------------------------------


def lenet5(recipe: Recipe, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """LeNet-5: conv 6@5×5 (same padding) → pool → conv 16@5×5 → pool → dense 120, 84 → classes.

    Widths scale with width_multiplier (1.0 = the classic 6/16). The second convolution pads
    when the image is too small for a valid 5×5 (e.g. 8×8 digits).
    """
    channels, height, width = _image_shape("lenet5", input_shape)
    pool = nn.MaxPool2d if recipe.option("pool") == "max" else nn.AvgPool2d
    c1, c2 = _width(6, recipe.width_multiplier), _width(16, recipe.width_multiplier)
    side = min(height, width)
    layers: list[nn.Module] = [
        nn.Conv2d(channels, c1, 5, padding=2),
        activation(recipe.activation),
    ]
    if side >= 2:
        layers.append(pool(2))
        side //= 2
    # Classic LeNet uses a valid 5x5 here (14 -> 10); smaller maps keep their size instead.
    pad2 = 0 if side >= 5 else 2
    side = side - 4 if pad2 == 0 else side
    layers += [nn.Conv2d(c1, c2, 5, padding=pad2), activation(recipe.activation)]
    if side >= 2:
        layers.append(pool(2))
    layers.append(nn.Flatten())
    features = nn.Sequential(*layers)
    return nn.Sequential(features, dense_head(_features_out(features, input_shape), recipe, num_classes))


# ---- tabular and text ------------------------------------------------------------------------


def mlp(recipe: Recipe, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Multilayer perceptron over flattened inputs (tabular data)."""
    features = int(np.prod(input_shape)) if len(input_shape) else 0
    if features < 1:
        raise ValueError(f"input_shape: mlp needs at least one input feature, got {tuple(input_shape)}")
    return nn.Sequential(nn.Flatten(), dense_head(features, recipe, num_classes))


class _Presence(nn.Module):
    """Word counts → presence flags (0/1), the usual Reuters bag-of-words encoding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return clip01(x)


def textmlp(recipe: Recipe, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Bag-of-words classifier (Reuters-style): vocabulary vector → dense layers → classes."""
    if len(input_shape) != 1 or int(input_shape[0]) < 1:
        raise ValueError(f"input_shape: textmlp needs a 1-D vocabulary vector, got {tuple(input_shape)}")
    layers: list[nn.Module] = [_Presence()] if recipe.option("binarize") else []
    layers.append(dense_head(int(input_shape[0]), recipe, num_classes))
    return nn.Sequential(*layers)


BUILDERS: dict[str, Callable[[Recipe, Sequence[int], int], nn.Module]] = {
    "lenet5": lenet5,
    "mlp": mlp,
    "textmlp": textmlp,
}


def build_model(
    recipe: Recipe,
    input_shape: Sequence[int],
    num_classes: int,
    input_stats: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
) -> ZooModel:
    """The recipe's architecture for inputs of `input_shape` (no batch axis), initialised
    with the recipe's initialiser from `seed`.

    `input_stats` = (mean, std) from the training split (see `layers.input_statistics`); it
    is required when `recipe.normalize_input` is set and ignored otherwise.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe: expected a Recipe, got {type(recipe).__name__}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes: need an integer >= 2, got {num_classes!r}")
    if recipe.architecture not in BUILDERS:
        raise ValueError(f"architecture: {recipe.architecture!r} has no builder; built: {sorted(BUILDERS)}")
    input_shape = tuple(int(d) for d in input_shape)
    normalize = None
    if recipe.normalize_input:
        if input_stats is None:
            raise ValueError("input_stats: normalize_input is set, so the training split's (mean, std) is required")
        normalize = Normalize(*input_stats)
    body = BUILDERS[recipe.architecture](recipe, input_shape, int(num_classes))
    model = ZooModel(body, recipe.last_activation, normalize)
    initialize(model, recipe.initializer, seed)
    return model
