"""Turns untrusted bytes into a checked ONNX model, or a clear InvalidModelError."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

_STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml"}
# A declared dimension larger than this is treated as hostile rather than as a model.
_MAX_DECLARED_DIM = 1 << 31
# Elements one tensor may hold (weights, constants, or an intermediate whose shape is known
# before running): 2^28 float32 is 1 GiB, far above any model we repair, far below what would
# take a worker down. Batch-like symbolic dimensions count as 1.
MAX_TENSOR_ELEMENTS = 1 << 28


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


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _all_nodes(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.NodeProto]]:
    """(where, node) for every node of the main graph, its subgraphs (If/Loop/Scan bodies,
    however deep: protobuf parsing already bounds the nesting) and model-local functions."""
    stack = [("graph", model.graph)]
    stack += [(f"function {f.domain}.{f.name}", f) for f in model.functions]
    while stack:
        where, graph = stack.pop()
        for node in graph.node:
            yield where, node
            stack.extend((f"{where} > {node.name or node.op_type}", g) for g in _subgraphs(node))


def _all_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """(description, tensor) for every tensor stored in the model: initializers, sparse
    initializers and tensor attributes of every node (Constant values, etc.)."""
    graphs = [model.graph]
    for _, node in _all_nodes(model):
        graphs.extend(_subgraphs(node))
    for graph in graphs:
        for t in graph.initializer:
            yield f"initializer {t.name!r}", t
        for sp in graph.sparse_initializer:
            yield f"sparse initializer {sp.values.name!r}", sp.values
            yield f"sparse initializer {sp.values.name!r} indices", sp.indices
    for _, node in _all_nodes(model):
        for attr in node.attribute:
            what = f"attribute {attr.name!r} of node {node.name or node.op_type!r}"
            if attr.HasField("t"):
                yield what, attr.t
            for t in attr.tensors:
                yield what, t
            if attr.HasField("sparse_tensor"):
                yield what, attr.sparse_tensor.values
            for sp in attr.sparse_tensors:
                yield what, sp.values


def _elements(dims) -> int:
    return math.prod(int(d) for d in dims) if len(dims) else 1


def _check_inferred_sizes(model: onnx.ModelProto) -> None:
    """Rejects a graph whose shape inference (with constant propagation) shows a tensor over
    MAX_TENSOR_ELEMENTS, e.g. ConstantOfShape([2^17, 2^17]): onnxruntime would try to allocate
    it on the first run and take the worker down."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # inference is a guard, not a gate: the checker and onnxruntime decide validity
        return
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in value.type.tensor_type.shape.dim]
        if any(d < 0 for d in dims):
            raise InvalidModelError(f"tensor {value.name!r} has a negative inferred dimension {dims}")
        if _elements(dims) > MAX_TENSOR_ELEMENTS:
            raise InvalidModelError(
                f"tensor {value.name!r} would hold {_elements(dims)} elements (shape {dims}), over the limit of "
                f"{MAX_TENSOR_ELEMENTS}: refusing a model that allocates that much"
            )


def validate_model(model: onnx.ModelProto) -> None:
    """Raises InvalidModelError unless the model passes onnx.checker, keeps all weights
    inline, uses only standard operator domains (in every subgraph and function), has finite
    weights, no tensor larger than MAX_TENSOR_ELEMENTS (stored or inferred) and one input."""
    tensors = list(_all_tensors(model))
    for what, tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            raise InvalidModelError(
                f"{what} refers to external data (location {location[:200]!r}); models must be self-contained"
            )
        if any(d < 0 for d in tensor.dims) or _elements(tensor.dims) > MAX_TENSOR_ELEMENTS:
            raise InvalidModelError(
                f"{what} declares shape {list(tensor.dims)[:8]}, over the limit of {MAX_TENSOR_ELEMENTS} elements"
            )
    for where, node in _all_nodes(model):
        if node.domain not in _STANDARD_DOMAINS:
            raise InvalidModelError(
                f"node {node.name or node.op_type!r} ({where}) uses custom operator domain {node.domain!r}"
            )
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        # The checker's messages span lines ("input 'b' of node: ...\n name: ..."): keep them whole.
        first = " ".join(str(exc).split())[:400] or repr(exc)
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
    for what, tensor in tensors:
        if tensor.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
            try:
                arr = numpy_helper.to_array(tensor)
            except Exception as exc:  # data that does not fit its declared shape or type
                raise InvalidModelError(f"{what} cannot be read: {exc}") from exc
            if not np.all(np.isfinite(arr)):
                raise InvalidModelError(f"{what} holds NaN or Inf weights")
    _check_inferred_sizes(model)


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


def warm_up() -> None:
    """Validates a tiny built-in convolutional classifier once. The first model a process
    validates pays one-off costs (onnx.checker's operator registry, numpy's lazily imported
    parts: about 40 ms); a service calls this at start so that its first job does not."""
    from onnx import helper

    weights = [
        numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w"),
        numpy_helper.from_array(np.ones((2, 8), np.float32), "g"),
        numpy_helper.from_array(np.array([2, -1], np.int64), "shape"),
    ]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["f"]), helper.make_node("Gemm", ["f", "g"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "warm-up", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])], weights)
    load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
