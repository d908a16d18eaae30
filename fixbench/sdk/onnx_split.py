"""Split an ONNX classifier at a hidden tensor (numpy + onnxruntime only).

Neuron-level repairs (CARE, NeuRecover, INNER) look at the activations that feed one dense
layer and then re-run only the rest of the network many times: with an intervened activation
(causal analysis), with candidate weights (search), or under gradient descent. This module
finds the dense layers of a graph, computes hidden activations once, and builds the *tail*
sub-model from a hidden tensor to the output in which chosen weight initializers become graph
inputs, so one onnxruntime session evaluates every candidate without re-building the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper


class SplitError(ValueError):
    """The model has no dense layer to split at, or the split cannot be made."""


@dataclass(frozen=True)
class DenseLayer:
    """A Gemm or MatMul node whose weight is a 2-D initializer.

    `input` is the activation tensor it consumes; `layout` is "out_in" when the weight is
    (outputs, inputs) (Gemm transB=1, torch's layout) and "in_out" otherwise. `bias` is the
    initializer added by the Gemm or by the Add right after the MatMul, or None. `output` is
    the tensor after the bias."""

    node: str
    op: str
    input: str
    weight: str
    bias: str | None
    layout: str
    output: str
    in_features: int
    out_features: int

    def input_axis(self) -> int:
        """The weight axis indexed by this layer's input neurons."""
        return 1 if self.layout == "out_in" else 0


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def consumers(model: onnx.ModelProto, tensor: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if tensor in n.input]


def dense_layers(model: onnx.ModelProto) -> list[DenseLayer]:
    """The dense layers in graph order (ONNX graphs are topologically sorted)."""
    init = {t.name: t for t in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type not in ("Gemm", "MatMul") or len(node.input) < 2 or node.input[1] not in init:
            continue
        w = init[node.input[1]]
        if len(w.dims) != 2:
            continue
        bias, output = None, node.output[0]
        if node.op_type == "Gemm":
            if _attr(node, "transA", 0):
                continue
            layout = "out_in" if _attr(node, "transB", 0) else "in_out"
            if len(node.input) > 2 and node.input[2] in init:
                bias = node.input[2]
        else:
            layout = "in_out"
            after = consumers(model, node.output[0])
            if len(after) == 1 and after[0].op_type == "Add":
                other = [i for i in after[0].input if i != node.output[0]]
                if other and other[0] in init:
                    bias, output = other[0], after[0].output[0]
        rows, cols = int(w.dims[0]), int(w.dims[1])
        n_in, n_out = (cols, rows) if layout == "out_in" else (rows, cols)
        layers.append(DenseLayer(node.name or node.output[0], node.op_type, node.input[0], node.input[1], bias,
                                 layout, output, n_in, n_out))
    return layers


def model_input_name(model: onnx.ModelProto) -> str:
    init = {t.name for t in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in init)


def _session(model: onnx.ModelProto | bytes, threads: int | None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or int(os.environ.get("FIXBENCH_THREADS", "0") or 0) or 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


def activations(model: onnx.ModelProto, tensors: list[str], x: np.ndarray, batch_size: int = 512,
                threads: int | None = None) -> dict[str, np.ndarray]:
    """The values of hidden `tensors` (plus "__output__", the model's first output) on x."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for name in tensors:
        if name not in known:
            m.graph.output.append(helper.make_empty_tensor_value_info(name))
    # The appended outputs have no declared type; onnxruntime takes them from the producers.
    session = _session(m, threads)
    names = [model.graph.output[0].name, *tensors]
    feed = model_input_name(model)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    x = np.ascontiguousarray(x, dtype=np.float32)
    for i in range(0, len(x), batch_size):
        for name, value in zip(names, session.run(names, {feed: x[i : i + batch_size]}), strict=True):
            parts[name].append(value)
    out = {name: np.concatenate(v).astype(np.float32, copy=False) for name, v in parts.items() if v}
    first = model.graph.output[0].name
    out["__output__"] = out[first] if first in tensors else out.pop(first)
    return out


class Tail:
    """The sub-model from hidden tensor `split` to the model's first output, with the
    initializers in `free` turned into inputs (so candidates are fed, not rebuilt)."""

    def __init__(self, model: onnx.ModelProto, split: str, free: tuple[str, ...] = (), threads: int | None = None):
        out = model.graph.output[0].name
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
            sub = onnx.utils.Extractor(inferred).extract_model([split], [out])
        except Exception as exc:  # onnx raises several types for a tensor it cannot cut at
            raise SplitError(f"cannot split the model at {split!r}: {exc}") from exc
        # The rest of the graph must depend on the input only through `split`.
        feed = model_input_name(model)
        if split != feed and feed in {i for n in sub.graph.node for i in n.input}:
            raise SplitError(f"the layers after {split!r} also read the model input; it is no split point")
        init = {t.name: t for t in sub.graph.initializer}
        missing = [f for f in free if f not in init]
        if missing:
            raise SplitError(f"weights {missing} are not used after {split!r}")
        self.values = {name: numpy_helper.to_array(init[name]).astype(np.float32) for name in free}
        kept = [t for t in sub.graph.initializer if t.name not in free]
        del sub.graph.initializer[:]
        sub.graph.initializer.extend(kept)
        for name in free:
            sub.graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                 list(self.values[name].shape)))
        self.model = sub
        self.split = split
        self.free = tuple(free)
        self.session = _session(sub, threads)

    def run(self, h: np.ndarray, weights: dict[str, np.ndarray] | None = None, batch_size: int = 2048) -> np.ndarray:
        """The model's output for hidden activations h, with `weights` replacing free ones."""
        feed = {name: self.values[name] for name in self.free}
        for name, value in (weights or {}).items():
            if name not in feed:
                raise KeyError(f"{name!r} is not a free weight of this tail")
            feed[name] = np.ascontiguousarray(value, dtype=np.float32)
        parts = []
        for i in range(0, len(h), batch_size):
            feed[self.split] = np.ascontiguousarray(h[i : i + batch_size], dtype=np.float32)
            parts.append(self.session.run(None, feed)[0])
        return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros((0, 0), np.float32)


def with_initializers(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> bytes:
    """The model's bytes with the named initializers replaced (same dtype and shape)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = set(values)
    for t in m.graph.initializer:
        if t.name in values:
            old = numpy_helper.to_array(t)
            new = np.asarray(values[t.name], dtype=old.dtype)
            if new.shape != old.shape:
                raise ValueError(f"{t.name}: shape {new.shape} differs from {old.shape}")
            t.CopyFrom(numpy_helper.from_array(new, t.name))
            names.discard(t.name)
    if names:
        raise KeyError(f"no initializers named {sorted(names)}")
    return m.SerializeToString()


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    raise KeyError(name)


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows as probabilities: unchanged when they already are (a softmax-ended graph), else softmax."""
    if scores.size and np.all(scores >= -1e-6) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
        return scores
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def torch_tail(tail: Tail):
    """The tail as a torch module called as `module(h, *weights)`, the free weights in the
    order of `tail.free` (onnx2torch keeps fed weights as inputs, so gradients reach them).
    Imports torch: only for approaches on the torch layer."""
    from fixbench.onnxio.torch_bridge import onnx_to_torch

    return onnx_to_torch(tail.model)


def preload_torch() -> None:
    """Imports torch and onnx2torch now: called when a torch-based service starts, so that the
    first job's repair time is the method's, not the libraries' import (tens of seconds on a
    loaded machine)."""
    import torch  # noqa: F401

    from fixbench.onnxio.torch_bridge import _install_torchvision_standin

    _install_torchvision_standin()
    import onnx2torch  # noqa: F401
