"""Procedural stand-ins for the datasets that cannot ship here (CIFAR-10, CIFAR-10S, UTKFace,
ImageNet, Reuters): same shapes, same kind of sensitive attribute, learnable but imperfect
structure, generated from a seed in seconds. Names end in `-standin`; `stands_in_for` names
the real dataset, whose `pgd_epsilon` they share so that a study runs unchanged on either."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..greyskew import GROUP_NAMES as GREY_GROUPS
from ..greyskew import apply_grey_skew
from ..registry import register
from ..spec import SMALL_SET_PROPORTIONS, SPLIT_NAMES, DatasetSpec
from ..splits import Split, Splits, allocate, seeded_rng
from .eyes import SPEC as UNITYEYES_STANDIN
from .eyes import build_eyes
from .faces import SKIN_TONES, render_faces
from .scenes import CIFAR_STYLE, IMAGENET_STYLE, render_scenes
from .text import NUM_TOPICS, NUM_WORDS, TOPIC_PRIOR, render_documents

# Race-like groups in the UTKFace stand-in's training split: a light-skinned majority, as in
# UTKFace itself (about 42 % White); evaluation splits are balanced so that per-group
# metrics rest on equal numbers.
UTK_TRAIN_GROUP_PRIOR = (0.55, 0.25, 0.12, 0.08)
UTK_GROUP_NAMES = ("tone-1 (lightest)", "tone-2", "tone-3", "tone-4 (darkest)")
assert len(UTK_GROUP_NAMES) == len(SKIN_TONES)


def stratified_labels(
    name: str, num_samples: int, class_prior: np.ndarray | None, num_classes: int, scale: float
) -> dict[str, np.ndarray]:
    """Per split, the class labels (sorted) its samples will have: each class cut by the spec's
    proportions, like a stratified partition of a pool of `num_samples` samples."""
    total = int(np.floor(num_samples * scale + 0.5))
    prior = np.full(num_classes, 1.0 / num_classes) if class_prior is None else np.asarray(class_prior)
    per_class = allocate(total, tuple(prior))
    labels: dict[str, list[np.ndarray]] = {split: [] for split in SPLIT_NAMES}
    for c, count in enumerate(per_class):
        for split, k in zip(SPLIT_NAMES, allocate(count, SMALL_SET_PROPORTIONS.as_tuple(), tie_offset=c), strict=True):
            labels[split].append(np.full(k, c, dtype=np.int64))
    out = {split: np.concatenate(parts) for split, parts in labels.items()}
    empty = [split for split, y in out.items() if len(y) == 0]
    if empty:
        raise ValueError(f"scale={scale!r} leaves split(s) {empty} of {name!r} empty; use a larger scale")
    return out


def _generated(
    spec: DatasetSpec,
    num_samples: int,
    seed: int,
    scale: float,
    render: Callable[[np.random.Generator, np.ndarray, str], tuple[np.ndarray, np.ndarray | None]],
    class_prior: np.ndarray | None = None,
) -> dict[str, Split]:
    """Draws every split from its own stream: shuffled stratified labels, then the samples."""
    out = {}
    for split, labels in stratified_labels(spec.name, num_samples, class_prior, spec.num_classes, scale).items():
        rng = seeded_rng(seed, spec.name, split)
        y = rng.permutation(labels)
        x, group = render(rng, y, split)
        out[split] = Split(x=x, y=y, group=group)
    return out


def _scenes(style):
    def render(rng: np.random.Generator, y: np.ndarray, split: str) -> tuple[np.ndarray, None]:
        return render_scenes(rng, y, style), None

    return render


def _face_groups(rng: np.random.Generator, y: np.ndarray, split: str) -> np.ndarray:
    prior = UTK_TRAIN_GROUP_PRIOR if split == "train" else (0.25, 0.25, 0.25, 0.25)
    group = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        counts = allocate(len(members), prior, tie_offset=int(c))
        group[members] = rng.permutation(np.repeat(np.arange(len(prior)), counts))
    return group


def _render_faces(rng: np.random.Generator, y: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    group = _face_groups(rng, y, split)
    return render_faces(rng, y, group), group


def _render_documents(rng: np.random.Generator, y: np.ndarray, split: str) -> tuple[np.ndarray, None]:
    return render_documents(rng, y), None


def _spec(name: str, stands_in_for: str, **fields) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        stand_in=True,
        stands_in_for=stands_in_for,
        # Generated sets are as small as the offline ones: the same 30 % for repair + test.
        proportions=SMALL_SET_PROPORTIONS,
        **fields,
    )


CIFAR_CLASS_NAMES = tuple(
    f"{shape}-{texture}" for shape, texture in zip(
        ("disk", "disk", "square", "square", "triangle", "triangle", "ring", "ring", "cross", "cross"),
        ("stripes", "checker") * 5, strict=True,
    )
)  # fmt: skip
_SHAPE_NAMES = ("disk", "square", "triangle", "ring", "cross")
_TEXTURE_NAMES = ("stripes", "checker", "dots", "rings")
IMAGENET_CLASS_NAMES = tuple(f"{_SHAPE_NAMES[c // 4]}-{_TEXTURE_NAMES[c % 4]}" for c in range(20))

CIFAR10_STANDIN = _spec(
    "cifar10-standin",
    "cifar10",
    input_shape=(3, 32, 32),
    num_classes=10,
    class_names=CIFAR_CLASS_NAMES,
    sensitive_attribute=None,
    group_names=(),
    description=(
        "CIFAR-10-like scenes, 3x32x32 in [0, 1]: 10 classes = 5 shapes x 2 textures with a weak "
        "hue cue, random pose, distractors, gradient backgrounds, noise. 6,000 samples at scale 1."
    ),
    pgd_epsilon=0.031,
)

CIFAR10S_STANDIN = _spec(
    "cifar10s-standin",
    "cifar10s",
    input_shape=(3, 32, 32),
    num_classes=10,
    class_names=CIFAR_CLASS_NAMES,
    sensitive_attribute="greyscale",
    group_names=GREY_GROUPS,
    description=(
        "The CIFAR-10-like scenes with CIFAR-10S's skew: half grey; train 95/5 grey/colour per "
        "class (alternating), valid/repair/test 50/50. Group: grey (0) / colour (1)."
    ),
    pgd_epsilon=0.035,
)

UTKFACE_STANDIN = _spec(
    "utkface-standin",
    "utkface",
    input_shape=(3, 32, 32),
    num_classes=2,
    class_names=("gender-like 0", "gender-like 1"),
    sensitive_attribute="race",
    group_names=UTK_GROUP_NAMES,
    description=(
        "UTKFace-like faces, 3x32x32 in [0, 1]: label a gender-like cue (hair length, beard "
        "shadow), group a race-like skin tone (4), imbalanced 55/25/12/8 % in train only."
    ),
    pgd_epsilon=0.07,
)

IMAGENET_STANDIN = _spec(
    "imagenet-standin",
    "imagenet",
    input_shape=(3, 32, 32),
    num_classes=20,
    class_names=IMAGENET_CLASS_NAMES,
    sensitive_attribute=None,
    group_names=(),
    description=(
        "ImageNet-like scenes at reduced resolution 3x32x32: 20 classes = 5 shapes x 4 textures, "
        "smaller objects, 1-3 larger distractors, more noise — harder than the CIFAR-10 stand-in."
    ),
    pgd_epsilon=0.007,
)

REUTERS_STANDIN = _spec(
    "reuters-standin",
    "reuters",
    input_shape=(NUM_WORDS,),
    num_classes=NUM_TOPICS,
    class_names=tuple(f"topic {t}" for t in range(NUM_TOPICS)),
    sensitive_attribute=None,
    group_names=(),
    description=(
        "Reuters-like newswires: 0/1 presence of 1,000 frequency-ranked words, 46 topics with "
        "Zipfian word lists over a Zipfian background, skewed topic priors, mixed topics."
    ),
    pgd_epsilon=None,
    modality="text",
)

_SIZES = {
    "cifar10-standin": 6_000,
    "cifar10s-standin": 6_000,
    "utkface-standin": 5_000,
    "imagenet-standin": 8_000,
    "reuters-standin": 6_000,
}


def _build_cifar10(seed: int, scale: float, path: Path | None) -> Splits:
    spec = CIFAR10_STANDIN
    return Splits(spec=spec, **_generated(spec, _SIZES[spec.name], seed, scale, _scenes(CIFAR_STYLE)))


def _build_cifar10s(seed: int, scale: float, path: Path | None) -> Splits:
    spec = CIFAR10S_STANDIN
    colour = _generated(spec, _SIZES[spec.name], seed, scale, _scenes(CIFAR_STYLE))
    return Splits(spec=spec, **apply_grey_skew(colour, spec.name, seed))


def _build_utkface(seed: int, scale: float, path: Path | None) -> Splits:
    spec = UTKFACE_STANDIN
    return Splits(spec=spec, **_generated(spec, _SIZES[spec.name], seed, scale, _render_faces))


def _build_imagenet(seed: int, scale: float, path: Path | None) -> Splits:
    spec = IMAGENET_STANDIN
    return Splits(spec=spec, **_generated(spec, _SIZES[spec.name], seed, scale, _scenes(IMAGENET_STYLE)))


def _build_reuters(seed: int, scale: float, path: Path | None) -> Splits:
    spec = REUTERS_STANDIN
    return Splits(
        spec=spec, **_generated(spec, _SIZES[spec.name], seed, scale, _render_documents, class_prior=TOPIC_PRIOR)
    )


def base_size(name: str) -> int:
    """Number of samples a stand-in generates at scale 1."""
    return _SIZES[name]


for _spec_, _builder in (
    (CIFAR10_STANDIN, _build_cifar10),
    (CIFAR10S_STANDIN, _build_cifar10s),
    (UTKFACE_STANDIN, _build_utkface),
    (IMAGENET_STANDIN, _build_imagenet),
    (REUTERS_STANDIN, _build_reuters),
    (UNITYEYES_STANDIN, build_eyes),
):
    register(_spec_, _builder)
