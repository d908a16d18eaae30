"""Integrity check of a repaired model: a model that changed its interface, emits NaN/Inf, or
whose accuracy collapsed is CORRUPTED_OUTPUT (You et al.'s "CORRUPTED"), and its other
metrics must not be read as a repair result."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from fixbench.analysis.errors import InvalidSettingError
from fixbench.onnxio.validate import signature

OK = "ok"
CORRUPTED_OUTPUT = "corrupted_output"


@dataclass(frozen=True)
class IntegrityThresholds:
    """Accuracy collapse floors (accuracies in %): the repaired model is corrupted when its
    accuracy is below `relative_floor` × the original's, or below `absolute_floor`."""

    relative_floor: float = 0.5
    absolute_floor: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.relative_floor <= 1.0:
            raise InvalidSettingError(f"integrity relative_floor must lie in [0, 1], got {self.relative_floor}")
        if not 0.0 <= self.absolute_floor <= 100.0:
            raise InvalidSettingError(f"integrity absolute_floor must lie in [0, 100] (%), got {self.absolute_floor}")


@dataclass(frozen=True)
class IntegrityVerdict:
    """status is OK or CORRUPTED_OUTPUT; reason says a person why (empty when OK)."""

    status: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


def _describe(sig) -> str:
    return ", ".join(f"{onnx.TensorProto.DataType.Name(t)}{list(d)}" for t, d in sig) or "none"


def signature_problem(original: onnx.ModelProto, repaired: onnx.ModelProto) -> str:
    """Empty when both models share input/output types and shapes, else what differs. A
    symbolic dimension (e.g. "batch", -1) matches any size."""
    (in0, out0), (in1, out1) = signature(original), signature(repaired)

    def same(a, b):
        if len(a) != len(b):
            return False
        for (t0, d0), (t1, d1) in zip(a, b, strict=True):
            if t0 != t1 or len(d0) != len(d1):
                return False
            if any(x != y and x not in (-1, 0) and y not in (-1, 0) for x, y in zip(d0, d1, strict=True)):
                return False
        return True

    problems = []
    if not same(in0, in1):
        problems.append(f"input signature changed from {_describe(in0)} to {_describe(in1)}")
    if not same(out0, out1):
        problems.append(f"output signature changed from {_describe(out0)} to {_describe(out1)}")
    return "; ".join(problems)


def check_integrity(
    original: onnx.ModelProto,
    repaired: onnx.ModelProto,
    scores_after: np.ndarray | None,
    acc_before: float | None,
    acc_after: float | None,
    thresholds: IntegrityThresholds = IntegrityThresholds(),
) -> IntegrityVerdict:
    """Checks, in order, the signature, non-finite outputs on the test split, and accuracy
    collapse; the first failure decides the reason. Pass `scores_after=None` (and the
    accuracies None) when the signature check alone is wanted, e.g. before running."""
    problem = signature_problem(original, repaired)
    if problem:
        return IntegrityVerdict(CORRUPTED_OUTPUT, problem)
    if scores_after is not None:
        s = np.asarray(scores_after)
        bad = (
            int((~np.isfinite(s)).any(axis=tuple(range(1, s.ndim))).sum())
            if s.ndim > 1
            else int((~np.isfinite(s)).sum())
        )
        if bad:
            return IntegrityVerdict(
                CORRUPTED_OUTPUT,
                f"repaired model outputs NaN/Inf on {bad} of {len(s)} test inputs",
            )
    if acc_before is not None and acc_after is not None:
        if any(math.isnan(a) for a in (acc_before, acc_after)):
            raise InvalidSettingError("accuracies for the integrity check must not be NaN")
        floor = max(thresholds.relative_floor * acc_before, thresholds.absolute_floor)
        if acc_after < floor:
            return IntegrityVerdict(
                CORRUPTED_OUTPUT,
                f"accuracy collapsed: {acc_after:.2f}% < floor {floor:.2f}% "
                f"(max of {thresholds.relative_floor:g} × original {acc_before:.2f}% and absolute {thresholds.absolute_floor:g}%)",
            )
    return IntegrityVerdict(OK)
