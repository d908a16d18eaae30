"""A fault's paper "subject" (dataset → model, as in You et al.'s tables) from its bundle
metadata, with procedural stand-ins named as such."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

# Names as the papers print them; anything else is shown as registered.
DATASET_NAMES = {
    "mnist": "MNIST", "mnist5000": "MNIST", "digits": "Digits", "cifar10": "CIFAR-10", "cifar10s": "CIFAR-10S",
    "utkface": "UTKFace", "imagenet": "ImageNet", "reuters": "Reuters", "unityeyes": "UnityEyes",
    "adult": "Adult", "compas": "COMPAS", "german": "German credit",
}
ARCHITECTURE_NAMES = {
    "lenet5": "LeNet-5", "vgg16": "VGG-16", "resnet18": "ResNet-18", "densenet121": "DenseNet-121",
    "facenet": "FaceNet CNN", "mlp": "MLP", "textmlp": "text MLP",
}
STAND_IN_MARK = " (stand-in)"


def dataset_label(meta: Mapping[str, Any]) -> str:
    """'CIFAR-10 (stand-in)' for a procedural stand-in, 'MNIST' for real data."""
    name = str(meta.get("dataset") or "?")
    real = meta.get("stands_in_for") or name.removesuffix("-standin")
    label = DATASET_NAMES.get(real, real)
    return label + STAND_IN_MARK if meta.get("stand_in") else label


def subject_label(meta: Mapping[str, Any]) -> str:
    """'MNIST → LeNet-5' from a fault's metadata (dataset, architecture, stand_in)."""
    arch = str(meta.get("architecture") or "?")
    return f"{dataset_label(meta)} → {ARCHITECTURE_NAMES.get(arch, arch)}"


def subjects_for(faults: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """fault id → subject. A subject shared by several faults of the study (Kim et al.'s
    many MNIST mutants) would pool different faults in one table cell, so those faults are
    shown by their fault id instead."""
    labels = {fid: subject_label(meta) for fid, meta in faults.items()}
    shared = {label for label, n in Counter(labels.values()).items() if n > 1}
    return {fid: (fid if label in shared else label) for fid, label in labels.items()}
