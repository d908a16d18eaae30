"""Injected causes of misclassification faults: the training split is made imbalanced or
noisy before training, so the faulty model has a known reason to fail (You et al.'s subjects
are plain trained models; the causes give repairers something specific to fix).

Only the training split changes; valid / repair / test stay as drawn, so the failures show on
balanced, clean data. The train.npz of the bundle is the injected split — the data the
faulty model was trained on, as a developer would hold it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fixbench.data import Split


@dataclass(frozen=True)
class Causes:
    """Which causes to inject and how strongly (fractions in [0, 1)).

    class_imbalance: fraction of the samples of `minority_classes` dropped (default: the
    first half of the classes); group_imbalance: fraction of the samples of `minority_groups`
    of the sensitive attribute dropped (default: every group but the most frequent);
    label_noise: fraction of training labels replaced by another class.
    """

    class_imbalance: float = 0.0
    minority_classes: tuple[int, ...] | None = None
    group_imbalance: float = 0.0
    minority_groups: tuple[int, ...] | None = None
    label_noise: float = 0.0

    def __post_init__(self) -> None:
        for name in ("class_imbalance", "group_imbalance", "label_noise"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"causes.{name}: expected a fraction in [0, 1), got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("minority_classes", "minority_groups"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, (str, bytes)) or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in value
            ):
                raise ValueError(f"causes.{name}: expected a list of non-negative integers, got {value!r}")
            if not value:
                raise ValueError(f"causes.{name}: must not be empty when given")
            object.__setattr__(self, name, tuple(int(v) for v in value))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Causes:
        """Causes from a mapping; unknown keys raise ValueError naming them."""
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"causes: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Only the causes that are set (so an empty Causes is {})."""
        out = {}
        for key, value in asdict(self).items():
            if value not in (None, 0.0):
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def any(self) -> bool:
        return bool(self.class_imbalance or self.group_imbalance or self.label_noise)


def inject_causes(
    split: Split, causes: Causes, num_classes: int, num_groups: int, rng: np.random.Generator
) -> tuple[Split, dict[str, Any]]:
    """The training split with the causes applied (drops, then label noise) and a record of
    what changed (samples dropped per class / group, labels flipped)."""
    if not causes.any:
        return split, {}
    x, y, group = split.x, split.y, split.group
    keep = np.ones(len(y), dtype=bool)
    record: dict[str, Any] = {"train_size_before": int(len(y))}
    if causes.class_imbalance:
        minority = causes.minority_classes or tuple(range(num_classes // 2))
        bad = [c for c in minority if c >= num_classes]
        if bad:
            raise ValueError(f"causes.minority_classes: {bad} outside [0, {num_classes})")
        dropped = {}
        for cls in minority:
            members = np.flatnonzero(y == cls)
            n_drop = min(round(causes.class_imbalance * len(members)), max(len(members) - 1, 0))
            keep[rng.choice(members, size=n_drop, replace=False)] = False
            dropped[str(cls)] = int(n_drop)
        record["class_imbalance_dropped"] = dropped
    if causes.group_imbalance:
        if group is None or num_groups < 2:
            raise ValueError("causes.group_imbalance: this dataset declares no sensitive attribute (no groups)")
        counts = np.bincount(group, minlength=num_groups)
        minority = causes.minority_groups or tuple(g for g in range(num_groups) if g != int(counts.argmax()))
        bad = [g for g in minority if g >= num_groups]
        if bad:
            raise ValueError(f"causes.minority_groups: {bad} outside [0, {num_groups})")
        dropped = {}
        for g in minority:
            members = np.flatnonzero(keep & (group == g))
            n_drop = min(round(causes.group_imbalance * len(members)), max(len(members) - 1, 0))
            keep[rng.choice(members, size=n_drop, replace=False)] = False
            dropped[str(g)] = int(n_drop)
        record["group_imbalance_dropped"] = dropped
    x, y = x[keep], y[keep]
    group = group[keep] if group is not None else None
    if causes.label_noise:
        y = y.copy()
        n_noisy = round(causes.label_noise * len(y))
        noisy = np.sort(rng.choice(len(y), size=n_noisy, replace=False))
        # A shift in 1 … C−1 (mod C) always lands on another class.
        y[noisy] = (y[noisy] + rng.integers(1, num_classes, size=n_noisy)) % num_classes
        record["label_noise_flipped"] = int(n_noisy)
    record["train_size_after"] = int(len(y))
    return Split(x=np.ascontiguousarray(x), y=np.ascontiguousarray(y), group=group), record
