"""Architecture-specific recipe options (`Recipe.options`): declared names, defaults, parsers.

Options travel as strings (the proto carries a map<string, string>); each declared option has
a parser that turns the string into the value an architecture builder uses and raises
ValueError with the allowed values when the string does not fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OptionSpec:
    """One declared option: its default (as a string), parser and one line of help."""

    default: str
    parse: Callable[[str], Any]
    help: str


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"expected one of {list(allowed)}, got {text!r}")
        return text

    return parse


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"expected an integer in [{lo}, {hi}], got {text!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"expected an integer in [{lo}, {hi}], got {value}")
        return value

    return parse


def _int_list(min_len: int, max_len: int, lo: int, hi: int) -> Callable[[str], tuple[int, ...]]:
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(part) for part in text.split(","))
        except ValueError:
            raise ValueError(f"expected comma-separated integers, got {text!r}") from None
        if not min_len <= len(values) <= max_len or any(not lo <= v <= hi for v in values):
            raise ValueError(f"expected {min_len} to {max_len} comma-separated integers in [{lo}, {hi}], got {text!r}")
        return values

    return parse


_STEM_HELP = "first layers: cifar = 3×3 conv; imagenet = 7×7/2 conv + 3×3/2 max pool; auto = cifar up to 64 px"

ARCHITECTURE_OPTIONS: dict[str, dict[str, OptionSpec]] = {
    "lenet5": {
        "pool": OptionSpec("max", _choice("max", "avg"), "sub-sampling layers: max or average pooling"),
    },
    "vgg16": {
        "depth": OptionSpec("16", _choice("11", "13", "16", "19"), "VGG configuration (conv layers + 3)"),
        "batch_norm": OptionSpec("true", _bool, "BatchNorm after every convolution"),
    },
    "resnet18": {
        "blocks": OptionSpec(
            "2,2,2,2",
            _int_list(1, 4, 1, 8),
            "basic blocks per stage (ResNet-18: 2,2,2,2)",
        ),
        "stem": OptionSpec("auto", _choice("auto", "cifar", "imagenet"), _STEM_HELP),
    },
    "facenet": {
        "blocks": OptionSpec("3", _int_in(1, 6), "conv-BN-pool blocks, channels doubling from 32×width"),
    },
    "densenet121": {
        "blocks": OptionSpec(
            "6,12,24,16",
            _int_list(1, 4, 1, 48),
            "dense layers per block (DenseNet-121: 6,12,24,16)",
        ),
        "growth_rate": OptionSpec("32", _int_in(1, 128), "growth rate before width_multiplier scaling"),
        "stem": OptionSpec("auto", _choice("auto", "cifar", "imagenet"), _STEM_HELP),
    },
    "mlp": {},
    "textmlp": {
        "binarize": OptionSpec("true", _bool, "turn word counts into presence flags inside the graph"),
    },
}
