"""Readers for datasets' published on-disk formats. None of them unpickles anything.

Each reader returns raw arrays (uint8 pixels or sparse-derived counts) plus, where the format
has one, the official train/test division; `fixbench.data.ondisk` turns them into splits.
"""

from .cifar import CIFAR10_CLASSES, read_cifar10, read_cifar10_batch
from .folders import read_class_folders
from .idx import read_idx, read_mnist
from .svmlight import read_svmlight_bow
from .utkface import UTKFACE_RACES, parse_utkface_name, read_utkface

__all__ = [
    "CIFAR10_CLASSES",
    "UTKFACE_RACES",
    "parse_utkface_name",
    "read_cifar10",
    "read_cifar10_batch",
    "read_class_folders",
    "read_idx",
    "read_mnist",
    "read_svmlight_bow",
    "read_utkface",
]
