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


# ---- convolutional building blocks -----------------------------------------------------------


def _conv_bn_act(cin: int, cout: int, recipe: Recipe, stride: int = 1, batch_norm: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(activation(recipe.activation))
    return layers


def _global_pool_head(features: nn.Module, channels: int, recipe: Recipe, num_classes: int) -> nn.Module:
    """features → global average pool → dense head: any image size gives `channels` features."""
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), dense_head(channels, recipe, num_classes))


# ---- VGG -------------------------------------------------------------------------------------

_VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


def vgg16(recipe: Recipe, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """VGG-style CNN (CIFAR variant): 3×3 conv stacks (BatchNorm by default) with 2×2 max
    pooling, global average pooling, dense head. Options: depth 11/13/16/19, batch_norm.
    Pooling layers are skipped once the feature map is 1×1, so small images work too."""
    channels, height, width = _image_shape("vgg16", input_shape)
    batch_norm = recipe.option("batch_norm")
    side = min(height, width)
    layers: list[nn.Module] = []
    cin = channels
    for item in _VGG_CONFIGS[recipe.option("depth")]:
        if item == "M":
            if side >= 2:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            continue
        cout = _width(int(item), recipe.width_multiplier)
        layers += _conv_bn_act(cin, cout, recipe, batch_norm=batch_norm)
        cin = cout
    return _global_pool_head(nn.Sequential(*layers), cin, recipe, num_classes)


# ---- ResNet ----------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 conv-BN, identity (or 1×1 conv-BN) shortcut, activation."""

    def __init__(self, cin: int, cout: int, stride: int, recipe: Recipe):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = activation(recipe.activation)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.act2 = activation(recipe.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


def _stem(channels: int, cout: int, side: int, recipe: Recipe) -> tuple[list[nn.Module], int]:
    """First layers and the map side after them: CIFAR-style 3×3 conv, or ImageNet-style
    7×7/2 conv + 3×3/2 max pool (option stem; "auto" picks CIFAR up to 64 px)."""
    stem = recipe.option("stem")
    if stem == "cifar" or (stem == "auto" and side <= 64):
        return _conv_bn_act(channels, cout, recipe), side
    layers = [
        nn.Conv2d(channels, cout, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(cout),
        activation(recipe.activation),
        nn.MaxPool2d(3, stride=2, padding=1),
    ]
    return layers, ((side + 1) // 2 + 1) // 2


def resnet18(recipe: Recipe, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """ResNet-18: stem, four stages of basic blocks (widths 64/128/256/512 × width_multiplier,
    stride 2 from the second stage while the map is larger than 1×1), global average pool,
    dense head. Options: blocks per stage (default 2,2,2,2), stem."""
    channels, height, width = _image_shape("resnet18", input_shape)
    layers, side = _stem(channels, _width(64, recipe.width_multiplier), min(height, width), recipe)
    cin = _width(64, recipe.width_multiplier)
    for stage, count in enumerate(recipe.option("blocks")):
        cout = _width(64 * 2**stage, recipe.width_multiplier)
        stride = 2 if stage > 0 and side >= 2 else 1
        side = (side + 1) // 2 if stride == 2 else side
        for i in range(count):
            layers.append(BasicBlock(cin, cout, stride if i == 0 else 1, recipe))
            cin = cout
    return _global_pool_head(nn.Sequential(*layers), cin, recipe, num_classes)


# ---- FaceNet-style ---------------------------------------------------------------------------


def facenet(recipe: Recipe, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Small face CNN: `blocks` × (3×3 conv-BN-act, 3×3 conv-BN-act, 2×2 max pool) with widths
    32, 64, 128, … × width_multiplier, global average pool, embedding dense layer(s)
    (`hidden_units`), classes. Option blocks (default 3)."""
    channels, height, width = _image_shape("facenet", input_shape)
    side = min(height, width)
    layers: list[nn.Module] = []
    cin = channels
    for block in range(recipe.option("blocks")):
        cout = _width(32 * 2**block, recipe.width_multiplier)
        layers += _conv_bn_act(cin, cout, recipe) + _conv_bn_act(cout, cout, recipe)
        if side >= 2:
            layers.append(nn.MaxPool2d(2))
            side //= 2
        cin = cout
    return _global_pool_head(nn.Sequential(*layers), cin, recipe, num_classes)


# ---- DenseNet --------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    """Bottleneck dense layer: BN-act-1×1 conv (4k) → BN-act-3×3 conv (k), concatenated to its input."""

    def __init__(self, cin: int, growth: int, recipe: Recipe):
        super().__init__()
        self.block = nn.Sequential(
            nn.BatchNorm2d(cin),
            activation(recipe.activation),
            nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth),
            activation(recipe.activation),
            nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.block(x)], dim=1)


def densenet121(recipe: Recipe, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """DenseNet-121-style: stem (2k channels), dense blocks of bottleneck layers (option blocks,
    default 6,12,24,16) joined by transitions (BN-act-1×1 conv halving channels, 2×2 average
    pool), final BN-act, global average pool, dense head. Growth k = growth_rate ×
    width_multiplier (option growth_rate, default 32). Option stem as for resnet18."""
    channels, height, width = _image_shape("densenet121", input_shape)
    growth = _width(recipe.option("growth_rate"), recipe.width_multiplier)
    layers, side = _stem(channels, 2 * growth, min(height, width), recipe)
    cin = 2 * growth
    blocks = recipe.option("blocks")
    for index, count in enumerate(blocks):
        for _ in range(count):
            layers.append(DenseLayer(cin, growth, recipe))
            cin += growth
        if index < len(blocks) - 1:
            cout = max(1, cin // 2)
            layers += [nn.BatchNorm2d(cin), activation(recipe.activation), nn.Conv2d(cin, cout, 1, bias=False)]
            if side >= 2:
                layers.append(nn.AvgPool2d(2))
                side //= 2
            cin = cout
    layers += [nn.BatchNorm2d(cin), activation(recipe.activation)]
    return _global_pool_head(nn.Sequential(*layers), cin, recipe, num_classes)


BUILDERS: dict[str, Callable[[Recipe, Sequence[int], int], nn.Module]] = {
    "lenet5": lenet5,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "facenet": facenet,
    "densenet121": densenet121,
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
