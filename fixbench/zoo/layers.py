"""Building blocks shared by the architectures: activations, initialisers, input normalisation.

Everything here exports to ONNX with the legacy exporter and comes back through onnx2torch;
where a torch module would export to an op onnx2torch lacks, it is written with plain
arithmetic instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

# Keras's defaults for the initialisers that take parameters.
_KERAS_STD = 0.05
_KERAS_CONSTANT = 0.05
# Keras draws the *_normal variance-scaling initialisers from a normal truncated at two
# standard deviations, rescaled by this factor so the variance stays the intended one.
_TRUNCATED_STD_CORRECTION = 0.87962566103423978


class Exponential(nn.Module):
    """Keras "exponential" activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)


def clip01(x: torch.Tensor) -> torch.Tensor:
    """clip(x, 0, 1) as relu(x) − relu(x − 1): torch.clamp exports a Clip whose bounds
    onnx2torch cannot read back."""
    return torch.relu(x) - torch.relu(x - 1.0)


class HardSigmoid(nn.Module):
    """Keras's classic hard sigmoid, clip(0.2·x + 0.5, 0, 1) (torch's uses slope 1/6)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return clip01(0.2 * x + 0.5)


class Softsign(nn.Module):
    """x / (1 + |x|), written out because onnx2torch has no Softsign converter."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (1.0 + torch.abs(x))


class Softplus(nn.Module):
    """log(1 + e^x), computed stably and without the ONNX Softplus op."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) + torch.log(1.0 + torch.exp(-torch.abs(x)))


class DoubleSoftmax(nn.Module):
    """The DeepFD fault: softmax applied to a softmax output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(torch.softmax(x, dim=1), dim=1)


ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "softplus": Softplus,
    "softsign": Softsign,
    "exponential": Exponential,
    "linear": nn.Identity,
    "hard_sigmoid": HardSigmoid,
    # Keras applies softmax over the last (channel) axis; in NCHW that is axis 1.
    "softmax": lambda: nn.Softmax(dim=1),
    "double_softmax": DoubleSoftmax,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module for a recipe's activation or last_activation name."""
    try:
        return ACTIVATION_MODULES[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATION_MODULES)}") from None


# ---- initialisers ----------------------------------------------------------------------------


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    receptive = int(np.prod(weight.shape[2:])) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def _truncated(weight: torch.Tensor, std: float, gen: torch.Generator) -> None:
    nn.init.trunc_normal_(weight, 0.0, std, -2.0 * std, 2.0 * std, generator=gen)


def _scaled_uniform(weight: torch.Tensor, fan: float, scale: float, gen: torch.Generator) -> None:
    limit = math.sqrt(3.0 * scale / max(fan, 1.0))
    nn.init.uniform_(weight, -limit, limit, generator=gen)


def _scaled_normal(weight: torch.Tensor, fan: float, scale: float, gen: torch.Generator) -> None:
    _truncated(weight, math.sqrt(scale / max(fan, 1.0)) / _TRUNCATED_STD_CORRECTION, gen)


def init_weight(weight: torch.Tensor, name: str, gen: torch.Generator) -> None:
    """Fills a Conv/Linear weight in place with the named Keras initialiser."""
    fan_in, fan_out = _fans(weight)
    fan_avg = (fan_in + fan_out) / 2.0
    with torch.no_grad():
        if name == "zeros":
            weight.zero_()
        elif name == "ones":
            weight.fill_(1.0)
        elif name == "constant":
            weight.fill_(_KERAS_CONSTANT)
        elif name == "random_normal":
            nn.init.normal_(weight, 0.0, _KERAS_STD, generator=gen)
        elif name == "random_uniform":
            nn.init.uniform_(weight, -_KERAS_STD, _KERAS_STD, generator=gen)
        elif name == "truncated_normal":
            _truncated(weight, _KERAS_STD, gen)
        elif name == "orthogonal":
            nn.init.orthogonal_(weight, generator=gen)
        elif name == "lecun_uniform":
            _scaled_uniform(weight, fan_in, 1.0, gen)
        elif name == "lecun_normal":
            _scaled_normal(weight, fan_in, 1.0, gen)
        elif name == "glorot_uniform":
            _scaled_uniform(weight, fan_avg, 1.0, gen)
        elif name == "glorot_normal":
            _scaled_normal(weight, fan_avg, 1.0, gen)
        elif name == "he_uniform":
            _scaled_uniform(weight, fan_in, 2.0, gen)
        elif name == "he_normal":
            _scaled_normal(weight, fan_in, 2.0, gen)
        else:
            raise ValueError(f"unknown initializer {name!r}")


def initialize(module: nn.Module, name: str, seed: int) -> None:
    """Applies the initialiser to every Conv/Linear weight (biases zero, BatchNorm identity),
    drawing from a generator seeded with `seed` so the result ignores torch's global RNG."""
    gen = torch.Generator().manual_seed(seed)
    for sub in module.modules():
        if isinstance(sub, (nn.Conv2d, nn.Linear)):
            init_weight(sub.weight, name, gen)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.BatchNorm2d):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


def regularized_weights(module: nn.Module) -> list[torch.Tensor]:
    """The kernels a Keras kernel_regularizer would see: Conv/Linear weights, no biases."""
    return [sub.weight for sub in module.modules() if isinstance(sub, (nn.Conv2d, nn.Linear))]


# ---- input normalisation ---------------------------------------------------------------------


class Normalize(nn.Module):
    """(x − mean) / std inside the graph, so the exported model takes raw inputs."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)).unsqueeze(0))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, dtype=np.float32)).unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def input_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std for `Normalize`: per channel for (N, C, ...) inputs, per feature for (N, F).

    The returned arrays broadcast against one input (e.g. shape (C, 1, 1)); a zero std (a
    constant pixel or feature) becomes 1 so the division stays finite.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"input statistics need a non-empty batch of inputs, got shape {x.shape}")
    if x.ndim == 2:
        mean, std = x.mean(axis=0), x.std(axis=0)
    else:
        axes = (0,) + tuple(range(2, x.ndim))
        keep = (x.shape[1],) + (1,) * (x.ndim - 2)
        mean, std = x.mean(axis=axes).reshape(keep), x.std(axis=axes).reshape(keep)
    std = np.where(std > 1e-6, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)
