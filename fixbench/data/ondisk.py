"""Datasets read from a user-given path in their published formats (none ships here):
MNIST (IDX), CIFAR-10 and CIFAR-10S (binary batches), UTKFace, ImageNet-style class folders,
Reuters (svmlight). Where a format has an official train/test division, train/valid come
from its training part (9:1) and repair/test from its test part (halves), as the study cut
MNIST into 54,000 / 6,000 / 5,000 / 5,000."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .errors import DatasetPathError
from .formats.cifar import CIFAR10_CLASSES, CIFAR10_LAYOUT, read_cifar10
from .formats.folders import FOLDERS_LAYOUT, read_class_folders
from .formats.idx import MNIST_LAYOUT, read_mnist
from .formats.svmlight import read_svmlight_bow
from .formats.utkface import UTKFACE_GENDERS, UTKFACE_LAYOUT, UTKFACE_RACES, read_utkface
from .greyskew import GROUP_NAMES as GREY_GROUPS
from .greyskew import apply_grey_skew
from .registry import register
from .spec import SPLIT_NAMES, STUDY_PROPORTIONS, DatasetSpec, SplitProportions
from .splits import Splits, splits_from_pool

IMAGE_SIZE = (32, 32)
REUTERS_WORDS = 1_000
REUTERS_TOPICS = 46

MNIST = DatasetSpec(
    name="mnist",
    input_shape=(1, 28, 28),
    num_classes=10,
    class_names=tuple(str(d) for d in range(10)),
    sensitive_attribute=None,
    group_names=(),
    stand_in=False,
    stands_in_for=None,
    description="MNIST, 70,000 digits from the IDX files; 1x28x28 in [0, 1]. The study's subject.",
    proportions=STUDY_PROPORTIONS,
    pgd_epsilon=0.15,
    needs_path=True,
    path_layout=MNIST_LAYOUT,
)

CIFAR10_PROPORTIONS = SplitProportions.from_counts(45_000, 5_000, 5_000, 5_000)

CIFAR10 = DatasetSpec(
    name="cifar10",
    input_shape=(3, 32, 32),
    num_classes=10,
    class_names=CIFAR10_CLASSES,
    sensitive_attribute=None,
    group_names=(),
    stand_in=False,
    stands_in_for=None,
    description="CIFAR-10 (binary version), 60,000 colour images 3x32x32 in [0, 1].",
    proportions=CIFAR10_PROPORTIONS,
    pgd_epsilon=0.031,
    needs_path=True,
    path_layout=CIFAR10_LAYOUT,
)

CIFAR10S = DatasetSpec(
    name="cifar10s",
    input_shape=(3, 32, 32),
    num_classes=10,
    class_names=CIFAR10_CLASSES,
    sensitive_attribute="greyscale",
    group_names=GREY_GROUPS,
    stand_in=False,
    stands_in_for=None,
    description=(
        "CIFAR-10S (Wang et al. 2020) made from CIFAR-10's binary files: half the images grey; "
        "train skewed 95/5 per class (alternating), valid/repair/test 50/50. Group: grey/colour."
    ),
    proportions=CIFAR10_PROPORTIONS,
    pgd_epsilon=0.035,
    needs_path=True,
    path_layout=CIFAR10_LAYOUT,
)

UTKFACE = DatasetSpec(
    name="utkface",
    input_shape=(3, *IMAGE_SIZE),
    num_classes=2,
    class_names=UTKFACE_GENDERS,
    sensitive_attribute="race",
    group_names=UTKFACE_RACES,
    stand_in=False,
    stands_in_for=None,
    description=(
        "UTKFace faces resized to 3x32x32 in [0, 1]; label gender, sensitive attribute race "
        "(5 groups). No official split: the study's 54:6:5:5 proportions."
    ),
    proportions=STUDY_PROPORTIONS,
    pgd_epsilon=0.07,
    needs_path=True,
    path_layout=UTKFACE_LAYOUT,
)

IMAGENET = DatasetSpec(
    name="imagenet",
    input_shape=(3, *IMAGE_SIZE),
    num_classes=1000,
    # Read from the class folders: the splits' spec carries the names (and count) found there.
    class_names=(),
    sensitive_attribute=None,
    group_names=(),
    stand_in=False,
    stands_in_for=None,
    description=(
        "ImageNet-style class folders at reduced resolution 3x32x32 (as Downsampled ImageNet); "
        "1,000 classes for ImageNet-1k, or whatever classes the folders hold."
    ),
    # With train/ and val/ (ILSVRC-2012: 1,281,167 + 50,000 images) only the ratios inside each
    # part matter — 9:1 and 1:1, as here; pooled class folders get the study's proportions
    # (the ILSVRC fractions would leave 2 % for repair and for test).
    proportions=STUDY_PROPORTIONS,
    pgd_epsilon=0.007,
    needs_path=True,
    path_layout=FOLDERS_LAYOUT,
)

REUTERS_LAYOUT = (
    "one svmlight/libsvm file (label = topic 0-45, index:count per word, zero-based word ids), "
    "or a folder holding train.svmlight and test.svmlight"
)

REUTERS = DatasetSpec(
    name="reuters",
    input_shape=(REUTERS_WORDS,),
    num_classes=REUTERS_TOPICS,
    class_names=tuple(f"topic {t}" for t in range(REUTERS_TOPICS)),
    sensitive_attribute=None,
    group_names=(),
    stand_in=False,
    stands_in_for=None,
    description=(
        "Reuters-21578 newswires as in Keras (46 topics) from svmlight files: 0/1 presence of "
        "the 1,000 most frequent words, the input of the Keras Reuters MLP (Kim et al.'s subject)."
    ),
    # Keras's split of the 11,228 newswires: test_split=0.2 gives 8,982 / 2,246.
    proportions=SplitProportions.from_counts(8_084, 898, 1_123, 1_123),
    pgd_epsilon=None,
    modality="text",
    input_range=(0.0, 1.0),
    needs_path=True,
    path_layout=REUTERS_LAYOUT,
)


def _require(path: Path | None, spec: DatasetSpec) -> Path:
    if path is None:
        raise DatasetPathError(f"dataset {spec.name!r} needs path= ({spec.path_layout})")
    if not Path(path).exists():
        raise DatasetPathError(f"dataset {spec.name!r}: path {path} does not exist; expected {spec.path_layout}")
    return Path(path)


def _build_mnist(seed: int, scale: float, path: Path | None) -> Splits:
    x, y, official_test = read_mnist(_require(path, MNIST))
    return splits_from_pool(MNIST, x, y, None, seed, scale, official_test)


def _build_cifar10(seed: int, scale: float, path: Path | None) -> Splits:
    x, y, official_test = read_cifar10(_require(path, CIFAR10))
    return splits_from_pool(CIFAR10, x, y, None, seed, scale, official_test)


def _build_cifar10s(seed: int, scale: float, path: Path | None) -> Splits:
    x, y, official_test = read_cifar10(_require(path, CIFAR10S))
    colour = splits_from_pool(CIFAR10S, x, y, None, seed, scale, official_test)
    return Splits(spec=CIFAR10S, **apply_grey_skew(dict(colour), CIFAR10S.name, seed))


def _build_utkface(seed: int, scale: float, path: Path | None) -> Splits:
    x, y, group = read_utkface(_require(path, UTKFACE), IMAGE_SIZE)
    return splits_from_pool(UTKFACE, x, y, group, seed, scale)


def _build_imagenet(seed: int, scale: float, path: Path | None) -> Splits:
    x, y, official_test, classes = read_class_folders(_require(path, IMAGENET), IMAGE_SIZE)
    spec = dataclasses.replace(IMAGENET, num_classes=len(classes), class_names=classes)
    return splits_from_pool(spec, x, y, None, seed, scale, official_test)


def _build_reuters(seed: int, scale: float, path: Path | None) -> Splits:
    root = _require(path, REUTERS)
    if root.is_dir():
        files = [root / "train.svmlight", root / "test.svmlight"]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DatasetPathError(f"Reuters folder {root} lacks {missing}; expected {REUTERS_LAYOUT}")
    else:
        files = [root]
    parts = [read_svmlight_bow(f, REUTERS_WORDS, REUTERS_TOPICS) for f in files]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    official_test = np.r_[np.zeros(len(parts[0][1]), bool), np.ones(len(y) - len(parts[0][1]), bool)]
    return splits_from_pool(
        REUTERS, x, y, None, seed, scale, official_test if len(files) == 2 else None, _keep_presence
    )


def _keep_presence(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # Presence bits are already the input scale; no statistic to fit.
    return {name: raw[name].astype(np.float32, copy=False) for name in SPLIT_NAMES}


for _spec, _builder in (
    (MNIST, _build_mnist),
    (CIFAR10, _build_cifar10),
    (CIFAR10S, _build_cifar10s),
    (UTKFACE, _build_utkface),
    (IMAGENET, _build_imagenet),
    (REUTERS, _build_reuters),
):
    register(_spec, _builder)
