"""Class scores from a model, checked: every property needs a (batch, classes) matrix, and a
model whose output is something else must be refused with a reason, not mis-scored."""

from __future__ import annotations

import numpy as np
import onnx

from fixbench.analysis.errors import InvalidSettingError, NotClassScoresError

LOGITS = "logits"
PROBABILITIES = "probabilities"
_OUTPUT_KINDS = ("auto", LOGITS, PROBABILITIES)


def check_declared_output(model: onnx.ModelProto, name: str = "model") -> None:
    """Raises NotClassScoresError when the first graph output declares a rank other than 2 or
    a single class column (an undeclared shape is checked later, on the actual scores)."""
    if not model.graph.output:
        raise NotClassScoresError(f"{name} has no output")
    out = model.graph.output[0]
    ttype = out.type.tensor_type
    if ttype.HasField("shape"):
        dims = ttype.shape.dim
        if len(dims) != 2:
            raise NotClassScoresError(
                f"{name}'s output {out.name!r} has rank {len(dims)}; class scores must be (batch, classes)"
            )
        if dims[1].HasField("dim_value") and dims[1].dim_value < 2:
            raise NotClassScoresError(
                f"{name}'s output {out.name!r} has {dims[1].dim_value} column(s); a classifier needs "
                "one score per class (export binary classifiers with two class scores)"
            )


def check_scores(scores: np.ndarray, n_inputs: int, name: str = "model") -> np.ndarray:
    """Returns `scores` if it is a finite-shaped (n_inputs, classes ≥ 2) array, else raises."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise NotClassScoresError(
            f"{name} returned an output of shape {scores.shape}; class scores must be (batch, classes)"
        )
    if scores.shape[0] != n_inputs:
        raise NotClassScoresError(f"{name} returned {scores.shape[0]} rows of scores for {n_inputs} inputs")
    if scores.shape[1] < 2:
        raise NotClassScoresError(f"{name} returned {scores.shape[1]} score column(s); a classifier needs ≥ 2")
    return scores


def output_kind(
    model: onnx.ModelProto,
    sample_scores: np.ndarray | None = None,
    declared: str = "auto",
) -> str:
    """Whether the model outputs probabilities (a softmax last layer) or logits.

    `declared` other than "auto" wins. Otherwise a graph whose output is produced by a
    Softmax node gives probabilities; failing that, scores that are all in [0, 1] with rows
    summing to 1 (± 1e-4) are taken as probabilities (a softmax hidden behind e.g. an
    Identity or Reshape). LogSoftmax outputs count as logits: cross-entropy over them equals
    the NLL of the log-probabilities, which is what the attack needs.
    """
    if declared not in _OUTPUT_KINDS:
        raise InvalidSettingError(f"output_kind must be one of {_OUTPUT_KINDS}, got {declared!r}")
    if declared != "auto":
        return declared
    out_name = model.graph.output[0].name if model.graph.output else None
    for node in model.graph.node:
        if out_name in node.output:
            if node.op_type == "Softmax":
                return PROBABILITIES
            break
    if sample_scores is not None and sample_scores.size:
        s = np.asarray(sample_scores, dtype=np.float64)
        if s.min() >= 0.0 and s.max() <= 1.0 and np.allclose(s.sum(axis=1), 1.0, atol=1e-4):
            return PROBABILITIES
    return LOGITS
