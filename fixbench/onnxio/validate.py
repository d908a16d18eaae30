"""Turns untrusted bytes into a checked ONNX model, or a clear InvalidModelError."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

_STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml"}
# A declared dimension larger than this is treated as hostile rather than as a model.
_MAX_DECLARED_DIM = 1 << 31


class InvalidModelError(ValueError):
    """Bytes that are not a usable ONNX classifier; the message says what is wrong."""


def load_model(data: bytes) -> onnx.ModelProto:
    """Parses and validates ONNX bytes (see validate_model)."""
    if not data:
        raise InvalidModelError("the model is empty (0 bytes)")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError or RuntimeWarning-derived errors
        raise InvalidModelError(f"bytes are not an ONNX model (protobuf parse failed: {exc})") from exc
    if not model.graph.node and not model.graph.input:
        raise InvalidModelError("bytes parsed as an empty ONNX model: no graph, not an ONNX file")
    validate_model(model)
    return model


def validate_model(model: onnx.ModelProto) -> None:
    """Raises InvalidModelError unless the model passes onnx.checker, keeps all weights
    inline, uses only standard operator domains, has finite weights and one input."""
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise InvalidModelError(
                f"initializer {tensor.name!r} refers to external data; models must be self-contained"
            )
    for node in model.graph.node:
        if node.domain not in _STANDARD_DOMAINS:
            raise InvalidModelError(f"node {node.name or node.op_type!r} uses custom operator domain {node.domain!r}")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise InvalidModelError(f"onnx.checker rejected the model: {first}") from exc
    initializer_names = {t.name for t in model.graph.initializer}
    real_inputs = [i for i in model.graph.input if i.name not in initializer_names]
    if len(real_inputs) != 1:
        raise InvalidModelError(f"a classifier must have exactly one input; this model has {len(real_inputs)}")
    if not model.graph.output:
        raise InvalidModelError("the model has no output")
    for value in list(real_inputs) + list(model.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and not 0 <= dim.dim_value < _MAX_DECLARED_DIM:
                raise InvalidModelError(f"{value.name!r} declares an impossible dimension {dim.dim_value}")
    for tensor in model.graph.initializer:
        if tensor.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
            arr = numpy_helper.to_array(tensor)
            if not np.all(np.isfinite(arr)):
                raise InvalidModelError(f"initializer {tensor.name!r} holds NaN or Inf weights")


def signature(model: onnx.ModelProto) -> tuple[tuple, tuple]:
    """(input signature, output signature) as comparable tuples of (elem type, dims)."""

    def describe(values):
        out = []
        for v in values:
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim)
            out.append((v.type.tensor_type.elem_type, dims))
        return tuple(out)

    init = {t.name for t in model.graph.initializer}
    return describe([i for i in model.graph.input if i.name not in init]), describe(model.graph.output)
