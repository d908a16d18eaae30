"""Parity gate: white-box attacks run on a torch re-import of the ONNX model, and their
numbers mean something only if that re-import computes what onnxruntime computes. The gate
compares both on the same inputs; a model that fails it gets no robustness number."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from fixbench.analysis.errors import InvalidSettingError, check_same_length


@dataclass(frozen=True)
class ParityThresholds:
    """Pass when argmax agreement ≥ min_agreement and max |Δ score| ≤ max_abs_diff."""

    min_agreement: float = 0.999
    max_abs_diff: float = 1e-3

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_agreement <= 1.0:
            raise InvalidSettingError(f"parity min_agreement must lie in [0, 1], got {self.min_agreement}")
        if not (self.max_abs_diff >= 0.0 and math.isfinite(self.max_abs_diff)):
            raise InvalidSettingError(f"parity max_abs_diff must be a finite number ≥ 0, got {self.max_abs_diff}")


@dataclass(frozen=True)
class ParityReport:
    """Outcome of the gate; `reason` says why it failed (empty when it passed)."""

    passed: bool
    max_abs_diff: float
    argmax_agreement: float
    n: int
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def torch_scores(module, x: np.ndarray, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """The torch module's outputs on `x` (float32, no gradient), batched."""
    import torch

    parts = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)).to(device)
            out = module(xb)
            if isinstance(out, (tuple, list)):
                out = out[0]
            parts.append(out.detach().float().cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def compare_scores(
    reference: np.ndarray,
    candidate: np.ndarray,
    thresholds: ParityThresholds = ParityThresholds(),
) -> ParityReport:
    """Compares onnxruntime's scores (`reference`) with torch's (`candidate`)."""
    reference, candidate = (
        np.asarray(reference, dtype=np.float64),
        np.asarray(candidate, dtype=np.float64),
    )
    n = check_same_length(onnxruntime_scores=reference, torch_scores=candidate)
    if reference.shape != candidate.shape:
        return ParityReport(
            False,
            math.inf,
            0.0,
            n,
            f"output shapes differ: onnxruntime {reference.shape}, torch {candidate.shape}",
        )
    if n == 0:
        return ParityReport(False, math.nan, math.nan, 0, "no inputs to compare on")
    if not (np.all(np.isfinite(reference)) and np.all(np.isfinite(candidate))):
        return ParityReport(False, math.inf, 0.0, n, "NaN or Inf in the outputs")
    max_diff = float(np.abs(reference - candidate).max())
    agreement = float((reference.argmax(axis=1) == candidate.argmax(axis=1)).mean())
    problems = []
    if agreement < thresholds.min_agreement:
        problems.append(f"argmax agreement {agreement:.4f} < {thresholds.min_agreement}")
    if max_diff > thresholds.max_abs_diff:
        problems.append(f"max |Δ output| {max_diff:.3g} > {thresholds.max_abs_diff}")
    reason = ("torch re-import disagrees with onnxruntime: " + "; ".join(problems)) if problems else ""
    return ParityReport(not problems, max_diff, agreement, n, reason)


def check_parity(
    module,
    reference_scores: np.ndarray,
    x: np.ndarray,
    thresholds: ParityThresholds = ParityThresholds(),
    batch_size: int = 256,
    device: str = "cpu",
) -> ParityReport:
    """Runs the torch module on `x` and compares with onnxruntime's scores on the same `x`.

    A module that raises while running fails the gate with the error as reason (onnx2torch
    converts some ops it cannot execute for every shape).
    """
    check_same_length(x=x, reference_scores=reference_scores)
    try:
        candidate = torch_scores(module, x, batch_size=batch_size, device=device)
    except Exception as exc:  # noqa: BLE001 — any failure of the re-import means "unsupported", with why
        return ParityReport(
            False,
            math.nan,
            math.nan,
            len(x),
            f"torch re-import failed to run: {type(exc).__name__}: {exc}",
        )
    return compare_scores(reference_scores, candidate, thresholds)


def import_to_torch(model) -> tuple[object | None, str]:
    """(module, "") or (None, reason) for an onnx.ModelProto: conversion failures (an op
    onnx2torch lacks) are an "unsupported" outcome, not an evaluator crash."""
    from fixbench.onnxio.torch_bridge import onnx_to_torch

    try:
        return onnx_to_torch(model), ""
    except Exception as exc:  # noqa: BLE001 — onnx2torch raises NotImplementedError, KeyError, RuntimeError…
        return None, f"onnx2torch cannot convert the model: {type(exc).__name__}: {exc}"
