"""What a repair changed in the model: size, and how many weights moved and by how much.

Weights are the graph initializers, matched by name. Exporters keep names stable when
only weights change (every weight-level approach here), so a name present on one side
only, or a shape change, means the architecture changed: those tensors are listed, not
differenced, since there is no element-wise correspondence to measure.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

from fixbench.analysis.errors import InvalidSettingError
from fixbench.onnxio.validate import load_model


def _as_model(model: onnx.ModelProto | bytes, name: str) -> tuple[onnx.ModelProto, int]:
    if isinstance(model, (bytes, bytearray)):
        return load_model(bytes(model)), len(model)
    if isinstance(model, onnx.ModelProto):
        return model, model.ByteSize()
    raise InvalidSettingError(f"{name} must be ONNX bytes or an onnx.ModelProto, got {type(model).__name__}")


def _float_initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    out = {}
    for t in model.graph.initializer:
        arr = numpy_helper.to_array(t)
        # Integer initializers are shapes and indices (Reshape targets, Gather ids), not weights.
        if np.issubdtype(arr.dtype, np.floating):
            out[t.name] = arr.astype(np.float64)
    return out


def model_change(
    original: onnx.ModelProto | bytes,
    repaired: onnx.ModelProto | bytes,
    atol: float = 0.0,
) -> tuple[dict[str, float], dict]:
    """(metrics, details) describing how `repaired` differs from `original`.

    metrics: size_before_bytes / size_after_bytes / size_delta_bytes (serialized sizes);
    params_before / params_after (float weights); weights_changed (elements of name- and
    shape-matched tensors with |Δ| > atol — L0 of the change); weights_changed_pct (of the
    matched elements); delta_l2 and delta_linf (L2 and L∞ norms of the whole change vector
    over matched tensors); tensors_changed; tensors_added / tensors_removed / tensors_reshaped;
    architecture_changed (1 when the operator sequence or any tensor set differs, else 0).
    details: per changed tensor {l0, l2, linf, size} and the names added / removed / reshaped.
    """
    if not (atol >= 0.0 and math.isfinite(atol)):
        raise InvalidSettingError(f"atol must be a finite number ≥ 0, got {atol}")
    m0, size0 = _as_model(original, "original")
    m1, size1 = _as_model(repaired, "repaired")
    w0, w1 = _float_initializers(m0), _float_initializers(m1)
    added = sorted(set(w1) - set(w0))
    removed = sorted(set(w0) - set(w1))
    reshaped = sorted(k for k in set(w0) & set(w1) if w0[k].shape != w1[k].shape)
    matched = sorted(k for k in set(w0) & set(w1) if w0[k].shape == w1[k].shape)
    per_tensor: dict[str, dict[str, float]] = {}
    l0 = 0
    sq = 0.0
    linf = 0.0
    matched_elems = 0
    for name in matched:
        d = np.abs(w1[name] - w0[name])
        matched_elems += d.size
        changed = int((d > atol).sum())
        if changed:
            t_l2 = float(np.sqrt((d**2).sum()))
            t_linf = float(d.max())
            per_tensor[name] = {
                "l0": float(changed),
                "l2": t_l2,
                "linf": t_linf,
                "size": float(d.size),
            }
            l0 += changed
            sq += t_l2**2
            linf = max(linf, t_linf)
    ops0 = [n.op_type for n in m0.graph.node]
    ops1 = [n.op_type for n in m1.graph.node]
    arch_changed = bool(added or removed or reshaped or ops0 != ops1)
    metrics = {
        "size_before_bytes": float(size0),
        "size_after_bytes": float(size1),
        "size_delta_bytes": float(size1 - size0),
        "params_before": float(sum(a.size for a in w0.values())),
        "params_after": float(sum(a.size for a in w1.values())),
        "weights_changed": float(l0),
        "weights_changed_pct": float(l0 / matched_elems * 100.0) if matched_elems else 0.0,
        "delta_l2": float(math.sqrt(sq)),
        "delta_linf": float(linf),
        "tensors_changed": float(len(per_tensor)),
        "tensors_added": float(len(added)),
        "tensors_removed": float(len(removed)),
        "tensors_reshaped": float(len(reshaped)),
        "architecture_changed": float(arch_changed),
    }
    details = {
        "tensors": per_tensor,
        "added": added,
        "removed": removed,
        "reshaped": reshaped,
    }
    return metrics, details
