"""Arachne (Sohn, Kang & Yoo, "Arachne: Search-Based Repair of Deep Neural Networks",
ACM TOSEM 32(4), 2023), written from scratch on ONNX initializers with numpy + onnxruntime.

The repair works on the last dense layer(s) of a classifier:

1. One onnxruntime pass over the repair split, with the activation that feeds the targeted
   dense layer(s) exposed as an extra graph output; from there the dense tail is evaluated in
   numpy, so each candidate patch costs a few small matrix products instead of a full run.
2. Bidirectional localisation: for every weight, gradient loss (GL) and forward impact (FI)
   on the failing inputs, each divided by (1 + the same measure on passing inputs); the
   Pareto front of (GL, FI) is the set of weights to change.
3. Differential Evolution (DE/rand/1/bin) over the localised weights with Arachne's fitness;
   the best patch is written back into a copy of the model's initializers.

No torch here: the service image pins numpy 1.26 and an older onnxruntime (>= 1.17), so only
long-standing numpy / onnx / onnxruntime APIs are used.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

ProgressFn = Callable[[float, str, dict], None]
StopFn = Callable[[], bool]

_ACTIVATIONS = {
    "Relu": "relu",
    "LeakyRelu": "leaky_relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Elu": "elu",
    "Selu": "selu",
    "Exp": "exp",
}
# ONNX's attribute defaults for the activations that take parameters.
_ACT_ALPHA = {"LeakyRelu": 0.01, "Elu": 1.0, "Selu": 1.67326319217681884765625}
_SELU_GAMMA = 1.05070102214813232421875
# Ops that are the identity at inference time (exporters leave Dropout in some graphs).
_PASS_THROUGH = {"Identity", "Dropout"}
_FLOAT_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64}
FITNESS_KINDS = ("paper", "artifact")
INIT_KINDS = ("layer", "current")


class UnsupportedModelError(ValueError):
    """The model has no dense tail Arachne can localise in; the message is the reason."""


# ---------------------------------------------------------------------------------------
# Finding the dense tail in the ONNX graph
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DenseLayer:
    """One dense layer found in the graph: z = alpha * a @ W + beta * b, then `activation`.

    `transposed` says the initializer is stored (out, in) (Gemm transB=1, torch's layout);
    the numpy side always works on W as (in, out).
    """

    weight: str
    bias: str | None
    transposed: bool
    alpha: float
    beta: float
    input: str
    output: str
    activation: str = "identity"
    act_alpha: float = 0.0
    act_gamma: float = 1.0


@dataclass(frozen=True)
class DenseTail:
    """The last dense layers of a classifier, in forward order, and the ops that turn the last
    layer's scores into the graph output, in order: "softmax" / "log_softmax" (none for
    logits; a faulty model may apply softmax twice)."""

    layers: tuple[DenseLayer, ...]
    output_ops: tuple[str, ...] = ()

    @property
    def input(self) -> str:
        """The tensor that feeds the first targeted layer (captured by onnxruntime)."""
        return self.layers[0].input


class _GraphIndex:
    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.initializers = {t.name: t for t in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.output:
                if name:
                    self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.outputs = {o.name for o in graph.output}
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)

    def private(self, name: str) -> bool:
        """True when exactly one node reads the tensor and it is no graph output, so that
        changing what produces it changes nothing else in the model."""
        return len(self.consumers[name]) == 1 and name not in self.outputs

    def float_initializer(self, name: str, ndim: int | None = None) -> onnx.TensorProto | None:
        tensor = self.initializers.get(name)
        if tensor is None or tensor.data_type not in _FLOAT_TYPES:
            return None
        if ndim is not None and len(tensor.dims) != ndim:
            return None
        return tensor


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _describe(node: onnx.NodeProto | None) -> str:
    if node is None:
        return "a graph input or initializer"
    return f"{node.op_type} (node {node.name!r})" if node.name else node.op_type


def _skip_pass_through(index: _GraphIndex, name: str) -> tuple[str, onnx.NodeProto | None] | str:
    node = index.producer.get(name)
    while node is not None and node.op_type in _PASS_THROUGH:
        name = node.input[0]
        if not index.private(name):
            return f"tensor {name!r} inside the dense tail is also read elsewhere"
        node = index.producer.get(name)
    return name, node


def _parse_layer(index: _GraphIndex, out_name: str) -> DenseLayer | str:
    """The dense layer (plus trailing activation) that computes `out_name`, or a reason."""
    step = _skip_pass_through(index, out_name)
    if isinstance(step, str):
        return step
    name, node = step
    activation, act_alpha, act_gamma = "identity", 0.0, 1.0
    if node is not None and node.op_type in _ACTIVATIONS:
        activation = _ACTIVATIONS[node.op_type]
        act_alpha = float(_attr(node, "alpha", _ACT_ALPHA.get(node.op_type, 0.0)))
        act_gamma = float(_attr(node, "gamma", _SELU_GAMMA if node.op_type == "Selu" else 1.0))
        name = node.input[0]
        if not index.private(name):
            return f"the pre-activation {name!r} is also read elsewhere"
        step = _skip_pass_through(index, name)
        if isinstance(step, str):
            return step
        name, node = step
    if node is None:
        return f"{name!r} is computed by {_describe(node)}, not by a dense layer"

    if node.op_type == "Gemm":
        if int(_attr(node, "transA", 0)) != 0:
            return f"Gemm {node.name!r} transposes its input (transA=1), which Arachne does not support"
        weight = node.input[1]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        transposed = bool(int(_attr(node, "transB", 0)))
        alpha, beta = float(_attr(node, "alpha", 1.0)), float(_attr(node, "beta", 1.0))
        layer_input = node.input[0]
    elif node.op_type in ("Add", "MatMul"):
        bias = None
        matmul = node
        if node.op_type == "Add":
            ab = [i for i in node.input if index.float_initializer(i) is not None]
            other = [i for i in node.input if i not in ab]
            if len(ab) != 1 or len(other) != 1:
                return f"{_describe(node)} is not the bias addition of a dense layer"
            bias = ab[0]
            matmul = index.producer.get(other[0])
            if matmul is None or matmul.op_type != "MatMul":
                return f"{_describe(node)} does not add a bias to a MatMul, so it is not a dense layer"
            if not index.private(other[0]):
                return f"the MatMul output {other[0]!r} is also read elsewhere"
        weight = matmul.input[1]
        transposed, alpha, beta = False, 1.0, 1.0
        layer_input = matmul.input[0]
        node = matmul
    else:
        return (
            f"{name!r} is computed by {_describe(node)}, not by a dense layer (Gemm or MatMul[+Add]); "
            "Arachne localises weights of dense layers only"
        )

    w = index.float_initializer(weight, ndim=2)
    if w is None:
        return f"the weight {weight!r} of {_describe(node)} is not a 2-D float initializer"
    if len(index.consumers[weight]) != 1:
        return f"the weight {weight!r} is shared by several nodes"
    n_out = w.dims[0] if transposed else w.dims[1]
    if bias is not None:
        b = index.float_initializer(bias)
        if b is None or int(np.prod(b.dims)) not in (1, n_out) or (len(b.dims) > 1 and b.dims[-1] not in (1, n_out)):
            return f"the bias {bias!r} of {_describe(node)} is not a float initializer of {n_out} values"
    return DenseLayer(
        weight=weight,
        bias=bias,
        transposed=transposed,
        alpha=alpha,
        beta=beta,
        input=layer_input,
        output=out_name,
        activation=activation,
        act_alpha=act_alpha,
        act_gamma=act_gamma,
    )


def find_dense_tail(model: onnx.ModelProto, layers: int = 1) -> DenseTail:
    """The last `layers` dense layers computing the model's first output (fewer when the
    graph has fewer in a plain chain). Raises UnsupportedModelError naming what is there
    instead when the output is not computed by a dense layer."""
    if layers < 1:
        raise ValueError(f"layers must be at least 1, not {layers}")
    if not model.graph.output:
        raise UnsupportedModelError("the model has no output")
    index = _GraphIndex(model)
    step = _skip_pass_through(index, model.graph.output[0].name)
    if isinstance(step, str):
        raise UnsupportedModelError(step)
    name, node = step
    output_ops: list[str] = []
    while node is not None and node.op_type in ("Softmax", "LogSoftmax"):
        # Before opset 13 the default axis is 1; on the (N, classes) scores both mean "classes".
        axis = int(_attr(node, "axis", -1 if index.opset >= 13 else 1))
        if axis not in (-1, 1):
            raise UnsupportedModelError(f"{_describe(node)} normalises over axis {axis}, not over the classes")
        output_ops.insert(0, "softmax" if node.op_type == "Softmax" else "log_softmax")
        name = node.input[0]
        if not index.private(name):
            raise UnsupportedModelError(f"the scores {name!r} before {node.op_type} are also read elsewhere")
        step = _skip_pass_through(index, name)
        if isinstance(step, str):
            raise UnsupportedModelError(step)
        name, node = step
    found: list[DenseLayer] = []
    while len(found) < layers:
        parsed = _parse_layer(index, name)
        if isinstance(parsed, str):
            if not found:
                raise UnsupportedModelError(f"no dense last layer to localise in: {parsed}")
            break
        found.append(parsed)
        name = parsed.input
        if not index.private(name):
            break  # the layer's input also feeds other nodes: earlier layers must stay untouched
    return DenseTail(layers=tuple(reversed(found)), output_ops=tuple(output_ops))


def unadaptable_reason(model: onnx.ModelProto, layers: int = 1) -> str | None:
    """Why Arachne cannot repair this model (cheap, graph only), or None when it can."""
    try:
        find_dense_tail(model, layers)
    except UnsupportedModelError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------------------
# Capturing the tail's input with onnxruntime, evaluating the tail in numpy
# ---------------------------------------------------------------------------------------
def _graph_input_name(model: onnx.ModelProto) -> str:
    init = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in init]
    if len(names) != 1:
        raise UnsupportedModelError(f"a classifier must have exactly one input; this model has {len(names)}")
    return names[0]


def with_extra_output(model: onnx.ModelProto, tensor: str, elem_type: int = onnx.TensorProto.FLOAT) -> onnx.ModelProto:
    """A copy of the model that also outputs `tensor` (shape left open)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if tensor not in {o.name for o in out.graph.output}:
        out.graph.output.append(helper.make_tensor_value_info(tensor, elem_type, None))
    return out


def _session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    if threads > 0:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def capture(
    model: onnx.ModelProto, tail: DenseTail, x: np.ndarray, batch_size: int = 256, threads: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(activation feeding the tail (N, features), the model's first output) in one pass."""
    input_name = _graph_input_name(model)
    out_name = model.graph.output[0].name
    weight = next(t for t in model.graph.initializer if t.name == tail.layers[0].weight)
    if tail.input == input_name:
        session, fetch = _session(model, threads), [out_name]
    else:
        session, fetch = (
            _session(with_extra_output(model, tail.input, weight.data_type), threads),
            [out_name, tail.input],
        )
    feats, outs = [], []
    for start in range(0, len(x), batch_size):
        batch = np.ascontiguousarray(x[start : start + batch_size])
        got = session.run(fetch, {input_name: batch})
        outs.append(got[0])
        feats.append(got[1] if len(got) > 1 else batch)
    a0 = np.concatenate(feats) if feats else np.zeros((0, 0), dtype=np.float32)
    if a0.ndim != 2:
        raise UnsupportedModelError(
            f"the tensor {tail.input!r} feeding the dense tail has shape {a0.shape[1:]} per input, not a flat vector"
        )
    return a0, np.concatenate(outs) if outs else np.zeros((0, 0), dtype=np.float32)


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax(s: np.ndarray) -> np.ndarray:
    shifted = s - s.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def cross_entropy(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-input cross-entropy of softmax(scores) against labels y (float64)."""
    if len(y) == 0:
        return np.zeros(0)
    return -_log_softmax(scores.astype(np.float64))[np.arange(len(y)), y]


class TailNet:
    """The dense tail as numpy arrays: weights as (in, out), biases as (out,)."""

    def __init__(self, model: onnx.ModelProto, tail: DenseTail):
        init = {t.name: t for t in model.graph.initializer}
        self.tail = tail
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        for layer in tail.layers:
            w = numpy_helper.to_array(init[layer.weight])
            w = w.T if layer.transposed else w
            self.weights.append(np.ascontiguousarray(w, dtype=np.float32))
            n_out = w.shape[1]
            if layer.bias is None:
                b = np.zeros(n_out, dtype=np.float32)
            else:
                b = np.broadcast_to(numpy_helper.to_array(init[layer.bias]).reshape(-1), (n_out,))
            self.biases.append(np.asarray(b, dtype=np.float32) * np.float32(layer.beta))
            if len(self.weights) > 1 and self.weights[-2].shape[1] != w.shape[0]:
                raise UnsupportedModelError(
                    f"dense layers {tail.layers[-2].weight!r} and {layer.weight!r} do not chain"
                )

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    def pre(self, li: int, a: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        w = self.weights[li] if w is None else w
        z = a @ w
        if self.tail.layers[li].alpha != 1.0:
            z *= np.float32(self.tail.layers[li].alpha)
        return z + self.biases[li]

    def act(self, li: int, z: np.ndarray) -> np.ndarray:
        layer = self.tail.layers[li]
        kind, alpha = layer.activation, z.dtype.type(layer.act_alpha)
        if kind == "relu":
            return np.maximum(z, 0)
        if kind == "leaky_relu":
            return np.where(z > 0, z, z * alpha)
        with np.errstate(over="ignore"):  # exp overflow gives the right limits (0 or inf)
            if kind == "sigmoid":
                return 1.0 / (1.0 + np.exp(-z))
            if kind == "tanh":
                return np.tanh(z)
            if kind == "elu":
                return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0)))
            if kind == "selu":
                return z.dtype.type(layer.act_gamma) * np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0)))
            if kind == "exp":
                return np.exp(z)
        return z

    def act_grad(self, li: int, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        layer = self.tail.layers[li]
        kind, alpha = layer.activation, layer.act_alpha
        if kind == "relu":
            return (z > 0).astype(z.dtype)
        if kind == "leaky_relu":
            return np.where(z > 0, 1.0, alpha).astype(z.dtype)
        if kind == "sigmoid":
            return a * (1 - a)
        if kind == "tanh":
            return 1 - a * a
        if kind == "elu":
            return np.where(z > 0, 1.0, a + alpha).astype(z.dtype)
        if kind == "selu":
            return np.where(z > 0, layer.act_gamma, a + layer.act_gamma * alpha).astype(z.dtype)
        if kind == "exp":
            return a
        return np.ones_like(z)

    def forward(self, a0: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(activations a_0..a_L, pre-activations z_1..z_L); a_L are the scores."""
        acts, pres = [a0], []
        for li in range(self.n_layers):
            z = self.pre(li, acts[-1])
            pres.append(z)
            acts.append(self.act(li, z))
        return acts, pres

    def scores(self, a0: np.ndarray) -> np.ndarray:
        return self.forward(a0)[0][-1]

    def output(self, scores: np.ndarray) -> np.ndarray:
        """What the graph outputs for these scores (the tail's Softmax / LogSoftmax ops)."""
        out = scores
        for op in self.tail.output_ops:
            out = _softmax(out) if op == "softmax" else _log_softmax(out)
        return out

    def verify(self, a0: np.ndarray, model_output: np.ndarray) -> None:
        """Raises UnsupportedModelError unless the numpy tail reproduces onnxruntime's output,
        so that a graph feature this module does not model is never silently ignored."""
        if model_output.ndim != 2:
            raise UnsupportedModelError(f"the model output has shape {model_output.shape}, not (N, classes)")
        if a0.shape[1] != self.weights[0].shape[0]:
            raise UnsupportedModelError(
                f"the tail input has {a0.shape[1]} features but {self.tail.layers[0].weight!r} expects {self.weights[0].shape[0]}"
            )
        mine = self.output(self.scores(a0))
        if mine.shape != model_output.shape:
            raise UnsupportedModelError(f"the dense tail gives {mine.shape}, the model outputs {model_output.shape}")
        ref = model_output.astype(np.float64)
        tol = 1e-4 + 1e-3 * float(np.abs(ref).max(initial=0.0))
        diff = float(np.abs(mine - ref).max(initial=0.0))
        if not diff <= tol:
            raise UnsupportedModelError(
                f"the numpy dense tail disagrees with onnxruntime by {diff:.3g} (> {tol:.3g}): "
                "the graph computes something after the dense layers that Arachne does not model"
            )


# ---------------------------------------------------------------------------------------
# Bidirectional localisation
# ---------------------------------------------------------------------------------------
class WeightSite(NamedTuple):
    """A localised weight: tail layer, row (input unit) and column (output unit) of W as
    (in, out), and its localisation score."""

    layer: int
    row: int
    col: int
    score: float


def gradient_loss_and_forward_impact(
    net: TailNet, a0: np.ndarray, y: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per tail layer, (GL, FI) arrays shaped like W (in, out), over the inputs a0 / labels y.

    GL = |sum over inputs of dLoss/dW| (cross-entropy; summed, then absolute, as the
    original tool does). FI = (|o_i w_ij| / sum_k |o_k w_kj|, averaged over inputs) times
    the L1-normalised |d output / d o_j| averaged over inputs, where "output" is the sum of
    the final scores before softmax (the original tool differentiates the sum of the model
    outputs, which is constant under a softmax; for the last layer both give a uniform 1/C).
    """
    if len(y) == 0:
        return [(np.zeros(w.shape), np.zeros(w.shape)) for w in net.weights]
    acts, pres = net.forward(a0.astype(np.float64))
    n = len(y)
    d_loss = _softmax(acts[-1])
    d_loss[np.arange(n), y] -= 1.0
    d_out = np.ones_like(acts[-1])
    result: list[tuple[np.ndarray, np.ndarray]] = [None] * net.n_layers  # type: ignore[list-item]
    for li in reversed(range(net.n_layers)):
        w = net.weights[li].astype(np.float64)
        alpha = net.tail.layers[li].alpha
        grad_act = net.act_grad(li, pres[li], acts[li + 1])
        a_in = acts[li]
        dz_loss, dz_out = d_loss * grad_act, d_out * grad_act
        gl = np.abs(alpha * (a_in.T @ dz_loss))
        behind = np.abs(d_out)
        norm = behind.sum(axis=1, keepdims=True)
        behind = np.divide(behind, norm, out=np.zeros_like(behind), where=norm > 0).mean(axis=0)
        abs_a, abs_w = np.abs(a_in), np.abs(w)
        total = abs_a @ abs_w  # (N, out): sum_k |o_k w_kj| per input
        inv = np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)
        front = abs_w * (abs_a.T @ inv) / n
        result[li] = (gl, front * behind[None, :])
        d_loss = alpha * dz_loss @ w.T
        d_out = alpha * dz_out @ w.T
    return result


def pareto_front(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Indices (sorted) of the points not dominated when maximising both a and b; equal
    points are all kept."""
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((-b, -a))
    a_s, b_s = a[order], b[order]
    first = np.r_[True, a_s[1:] != a_s[:-1]]
    group = np.cumsum(first) - 1
    group_best = b_s[first]
    better_a_best = np.r_[-np.inf, np.maximum.accumulate(group_best)[:-1]]
    keep = (b_s == group_best[group]) & (b_s > better_a_best[group])
    return np.sort(order[keep])


def localise(
    net: TailNet, a_neg: np.ndarray, y_neg: np.ndarray, a_pos: np.ndarray, y_pos: np.ndarray, max_weights: int
) -> list[WeightSite]:
    """Arachne's bidirectional localisation: (GL, FI) on failing inputs divided by
    (1 + the same on passing inputs), then the Pareto front of the two. The paper keeps the
    whole front; when it holds more than `max_weights`, the ones with the highest mean of
    the two costs (each scaled by its maximum on the front) are kept."""
    neg = gradient_loss_and_forward_impact(net, a_neg, y_neg)
    pos = gradient_loss_and_forward_impact(net, a_pos, y_pos)
    gl = np.concatenate([(gn / (1.0 + gp)).ravel() for (gn, _), (gp, _) in zip(neg, pos, strict=True)])
    fi = np.concatenate([(fn / (1.0 + fp)).ravel() for (_, fn), (_, fp) in zip(neg, pos, strict=True)])
    front = pareto_front(gl, fi)
    gl_max, fi_max = gl[front].max(initial=0.0), fi[front].max(initial=0.0)
    score = 0.5 * ((gl[front] / gl_max if gl_max > 0 else 0.0) + (fi[front] / fi_max if fi_max > 0 else 0.0))
    keep = np.lexsort((front, -score))[:max_weights]  # best score first, ties by position
    offsets = np.cumsum([0] + [w.size for w in net.weights])
    sites = []
    for k in keep:
        flat = int(front[k])
        layer = int(np.searchsorted(offsets, flat, side="right") - 1)
        row, col = np.unravel_index(flat - offsets[layer], net.weights[layer].shape)
        sites.append(WeightSite(layer, int(row), int(col), float(score[k])))
    return sites


def stratified_sample(indices: np.ndarray, groups: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """About n of `indices`, drawn per group in proportion to the group's size, at least one
    per group (the original tool samples passing inputs per predicted label this way)."""
    indices = np.asarray(indices)
    if n >= len(indices):
        return np.sort(indices)
    picked = []
    for g in np.unique(groups[indices]):
        members = indices[groups[indices] == g]
        take = min(len(members), max(1, int(round(n * len(members) / len(indices)))))
        picked.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(picked))


# ---------------------------------------------------------------------------------------
# Fitness and Differential Evolution
# ---------------------------------------------------------------------------------------
def fitness_value(
    correct: np.ndarray,
    losses: np.ndarray,
    n_neg: int,
    kind: str = "paper",
    alpha: float = 1.0,
    forbid_broken_passing: bool = False,
) -> float:
    """Arachne's fitness of one candidate; the first n_neg entries are the failing inputs,
    the rest the passing ones.

    "paper" (Sohn et al., TOSEM 2023, Section 3, fitness function):
        alpha * (N_patched + 1) / (L_neg + 1) + (N_intact + 1) / (L_pos + 1)
    with N_patched the failing inputs now correct, N_intact the passing inputs still correct
    and L_neg / L_pos the mean cross-entropy over the failing / passing inputs.
    "artifact" (the public tool, coinse/arachne, searcher_vk.move):
        alpha * (N_patched + sum over still-failing 1/(loss+1)) + (N_intact + sum over broken 1/(loss+1)).
    alpha weights the failing inputs' term (the tool's `patch_aggr`). With
    forbid_broken_passing, a candidate that breaks any passing input scores -inf.
    """
    neg_ok, pos_ok = correct[:n_neg], correct[n_neg:]
    if forbid_broken_passing and not pos_ok.all():
        return -math.inf
    neg_loss, pos_loss = losses[:n_neg], losses[n_neg:]
    if kind == "paper":
        l_neg = float(neg_loss.mean()) if n_neg else 0.0
        l_pos = float(pos_loss.mean()) if len(pos_loss) else 0.0
        return alpha * (int(neg_ok.sum()) + 1) / (l_neg + 1) + (int(pos_ok.sum()) + 1) / (l_pos + 1)
    if kind == "artifact":
        neg_part = int(neg_ok.sum()) + float(np.sum(1.0 / (neg_loss[~neg_ok] + 1)))
        pos_part = int(pos_ok.sum()) + float(np.sum(1.0 / (pos_loss[~pos_ok] + 1)))
        return alpha * neg_part + pos_part
    raise ValueError(f"fitness must be one of {FITNESS_KINDS}, not {kind!r}")


class PatchEvaluator:
    """Scores candidate values for the localised weights on a fixed set of inputs.

    The pre-activation of the first layer holding a localised weight is cached; a candidate
    only adds (value - current) * input column to it, so the common single-layer case costs
    one (N, k) x (k, classes) product per candidate."""

    def __init__(
        self,
        net: TailNet,
        sites: list[WeightSite],
        a0: np.ndarray,
        y: np.ndarray,
        n_neg: int,
        fitness: str = "paper",
        alpha: float = 1.0,
        forbid_broken_passing: bool = False,
    ):
        if not sites:
            raise ValueError("no localised weights to evaluate")
        self.net, self.sites, self.y, self.n_neg = net, sites, y, n_neg
        self.fitness_kind, self.alpha, self.forbid = fitness, alpha, forbid_broken_passing
        self.current = np.array([net.weights[s.layer][s.row, s.col] for s in sites], dtype=np.float64)
        self.first = min(s.layer for s in sites)
        a = a0
        for li in range(self.first):
            a = net.act(li, net.pre(li, a))
        self.base_pre = net.pre(self.first, a)
        first_pos = [k for k, s in enumerate(sites) if s.layer == self.first]
        self.first_pos = np.array(first_pos)
        self.columns = np.ascontiguousarray(a[:, [sites[k].row for k in first_pos]]) * np.float32(
            net.tail.layers[self.first].alpha
        )
        self.scatter = np.zeros((len(first_pos), net.weights[self.first].shape[1]), dtype=np.float32)
        self.scatter[np.arange(len(first_pos)), [sites[k].col for k in first_pos]] = 1.0
        self.later = {
            li: [k for k, s in enumerate(sites) if s.layer == li] for li in range(self.first + 1, net.n_layers)
        }
        self.evaluations = 0

    def scores(self, values: np.ndarray) -> np.ndarray:
        delta = (values[self.first_pos] - self.current[self.first_pos]).astype(np.float32)
        z = self.base_pre + (self.columns * delta) @ self.scatter
        a = self.net.act(self.first, z)
        for li, positions in self.later.items():
            w = self.net.weights[li]
            if positions:
                w = w.copy()
                for k in positions:
                    w[self.sites[k].row, self.sites[k].col] = values[k]
            a = self.net.act(li, self.net.pre(li, a, w))
        return a

    def evaluate(self, values: np.ndarray) -> tuple[float, np.ndarray]:
        """(fitness, correct-per-input) of one candidate."""
        self.evaluations += 1
        s = self.scores(values)
        correct = s.argmax(axis=1) == self.y
        return fitness_value(
            correct, cross_entropy(s, self.y), self.n_neg, self.fitness_kind, self.alpha, self.forbid
        ), correct

    def fitness(self, values: np.ndarray) -> float:
        return self.evaluate(values)[0]


@dataclass
class SearchResult:
    """The best candidate DE found, its fitness and why the search ended."""

    best: np.ndarray
    fitness: float
    generations: int
    stop_reason: str


def differential_evolution(
    fitness: Callable[[np.ndarray], float],
    current: np.ndarray,
    init_mean: np.ndarray,
    init_std: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    rng: np.random.Generator,
    *,
    pop_size: int = 100,
    mutation: tuple[float, float] = (0.5, 1.0),
    crossover: float = 0.7,
    generations: int = 100,
    patience: int = 10,
    should_stop: StopFn | None = None,
    done: Callable[[np.ndarray], bool] | None = None,
    on_generation: Callable[[int, np.ndarray, float], None] | None = None,
) -> SearchResult:
    """Maximises `fitness` with DE/rand/1/bin, as Arachne does: the scale factor F is drawn
    once per generation from `mutation` (dither), mutants are clipped to [lower, upper], a
    trial replaces its target when at least as fit. The population is sampled from
    N(init_mean, init_std) per dimension; member 0 is the current weights, so the search
    never ends below the unpatched model. Stops after `generations`, after `patience`
    generations without a better best, when `done(best)` or when `should_stop()` (the
    deadline; checked before every generation)."""
    dims = len(current)
    if pop_size < 4:
        raise ValueError(f"pop_size must be at least 4 for DE/rand/1, not {pop_size}")
    pop = np.clip(rng.normal(init_mean, init_std, size=(pop_size, dims)), lower, upper)
    pop[0] = current
    fit = np.array([fitness(ind) for ind in pop])
    best_i = int(np.argmax(fit))
    best, best_fit = pop[best_i].copy(), float(fit[best_i])
    stale, gen, reason = 0, 0, "generations"
    if done is not None and done(best):
        return SearchResult(best, best_fit, 0, "all fixed")
    for gen in range(1, generations + 1):
        if should_stop is not None and should_stop():
            gen, reason = gen - 1, "deadline"
            break
        scale = rng.uniform(mutation[0], mutation[1])
        others = np.arange(pop_size - 1)
        for i in range(pop_size):
            a, b, c = rng.choice(others, size=3, replace=False)
            a, b, c = (v + (v >= i) for v in (a, b, c))  # skip the target itself
            mutant = np.clip(pop[a] + scale * (pop[b] - pop[c]), lower, upper)
            cross = rng.random(dims) < crossover
            cross[rng.integers(dims)] = True
            trial = np.where(cross, mutant, pop[i])
            trial_fit = fitness(trial)
            if trial_fit >= fit[i]:
                pop[i], fit[i] = trial, trial_fit
        gen_best = int(np.argmax(fit))
        if fit[gen_best] > best_fit:
            best, best_fit, stale = pop[gen_best].copy(), float(fit[gen_best]), 0
        else:
            stale += 1
        if on_generation is not None:
            on_generation(gen, best, best_fit)
        if done is not None and done(best):
            reason = "all fixed"
            break
        if stale >= patience:
            reason = "patience"
            break
    return SearchResult(best, best_fit, gen, reason)


# ---------------------------------------------------------------------------------------
# The whole repair
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArachneConfig:
    """Arachne's parameters (defaults: the original tool's, see README.md)."""

    layers: int = 1
    max_weights: int = 100
    pop_size: int = 100
    mutation_min: float = 0.5
    mutation_max: float = 1.0
    crossover: float = 0.7
    generations: int = 100
    patience: int = 10
    max_passing: int = 5000
    forbid_broken_passing: bool = False
    fitness: str = "paper"
    alpha: float = 1.0
    init: str = "layer"
    batch_size: int = 256
    threads: int = 0

    def validate(self) -> None:
        """Raises ValueError naming the first bad field."""
        positive = ("layers", "max_weights", "generations", "patience", "batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.pop_size < 4:
            raise ValueError(f"pop_size must be at least 4, not {self.pop_size}")
        if self.max_passing < 0 or self.threads < 0:
            raise ValueError("max_passing and threads must not be negative")
        if not 0 < self.mutation_min <= self.mutation_max <= 2:
            raise ValueError(
                f"mutation_min / mutation_max must satisfy 0 < min <= max <= 2, "
                f"not {self.mutation_min} / {self.mutation_max}"
            )
        if not 0 <= self.crossover <= 1:
            raise ValueError(f"crossover must be in [0, 1], not {self.crossover}")
        if self.fitness not in FITNESS_KINDS:
            raise ValueError(f"fitness must be one of {FITNESS_KINDS}, not {self.fitness!r}")
        if self.init not in INIT_KINDS:
            raise ValueError(f"init must be one of {INIT_KINDS}, not {self.init!r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be positive, not {self.alpha}")

    @classmethod
    def from_params(cls, params: dict) -> ArachneConfig:
        """A config from a parameter dict, ignoring keys that are not config fields."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})


class Localised(NamedTuple):
    """A localised weight as the contract reports it: initializer name, index in the
    initializer's own layout, score."""

    tensor: str
    index: tuple[int, ...]
    score: float


@dataclass
class ArachneResult:
    """The repaired model (the original, unchanged, when no patch beat it), the localised
    weights and run metrics."""

    model: onnx.ModelProto
    localised: list[Localised]
    metrics: dict[str, float]
    patched: bool


def _check_data(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x must hold at least one input, batch first; got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"y must be one label per input ({len(x)}); got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold integer class labels, not {y.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64)


def _site_to_localised(tail: DenseTail, site: WeightSite) -> Localised:
    layer = tail.layers[site.layer]
    index = (site.col, site.row) if layer.transposed else (site.row, site.col)
    return Localised(layer.weight, index, site.score)


def apply_patch(
    model: onnx.ModelProto, tail: DenseTail, sites: list[WeightSite], values: np.ndarray
) -> onnx.ModelProto:
    """A copy of the model with the localised weights set to `values` (initializers replaced
    by name, in their own layout and dtype)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    by_name = {t.name: t for t in out.graph.initializer}
    arrays: dict[str, np.ndarray] = {}
    for site, value in zip(sites, values, strict=True):
        loc = _site_to_localised(tail, site)
        if loc.tensor not in arrays:
            arrays[loc.tensor] = numpy_helper.to_array(by_name[loc.tensor]).copy()
        arrays[loc.tensor][loc.index] = value
    for name, arr in arrays.items():
        by_name[name].CopyFrom(numpy_helper.from_array(arr, name))
    return out


def repair(
    model: onnx.ModelProto,
    x: np.ndarray,
    y: np.ndarray,
    config: ArachneConfig | None = None,
    seed: int = 0,
    should_stop: StopFn | None = None,
    progress: ProgressFn | None = None,
) -> ArachneResult:
    """Runs Arachne on the repair split (x, y): failing = inputs the model misclassifies,
    passing = the others (at most `max_passing`, sampled per predicted label). Deterministic
    for a given seed. `should_stop()` is checked every DE generation (the search then returns
    its best so far); `progress(fraction, stage, metrics)` reports each stage and generation."""
    config = config or ArachneConfig()
    config.validate()
    x, y = _check_data(x, y)
    report = progress or (lambda fraction, stage, metrics: None)
    started = time.monotonic()
    rng = np.random.default_rng(seed)

    tail = find_dense_tail(model, config.layers)
    net = TailNet(model, tail)
    a0, out = capture(model, tail, x, config.batch_size, config.threads)
    net.verify(a0, out)
    n_classes = out.shape[1]
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"y holds labels outside [0, {n_classes}) for a model with {n_classes} outputs")
    pred = out.argmax(axis=1)
    neg = np.flatnonzero(pred != y)
    pos = np.flatnonzero(pred == y)
    metrics: dict[str, float] = {
        "failing": float(len(neg)),
        "passing": float(len(pos)),
        "tail_layers": float(net.n_layers),
    }
    report(0.05, "capture", dict(metrics))
    if len(neg) == 0:
        metrics.update(fixed=0.0, broken=0.0, localised=0.0, seconds=time.monotonic() - started)
        return ArachneResult(model, [], metrics, patched=False)

    pos_search = pos if config.max_passing == 0 else stratified_sample(pos, pred, config.max_passing, rng)
    pos_loc = stratified_sample(pos_search, pred, len(neg), rng)
    sites = localise(net, a0[neg], y[neg], a0[pos_loc], y[pos_loc], config.max_weights)
    localised = [_site_to_localised(tail, s) for s in sites]
    metrics.update(localised=float(len(sites)), passing_searched=float(len(pos_search)))
    report(0.1, "localise", dict(metrics))

    order = np.concatenate([neg, pos_search])
    evaluator = PatchEvaluator(
        net, sites, a0[order], y[order], len(neg), config.fitness, config.alpha, config.forbid_broken_passing
    )
    current = evaluator.current
    layer_w = [net.weights[s.layer].astype(np.float64) for s in sites]
    mean = np.array([w.mean() for w in layer_w])
    std = np.array([w.std() for w in layer_w])
    # The original tool's bounds: twice the layer's extreme weights away from zero.
    lo = np.array([w.min() * 2 if w.min() < 0 else w.min() / 2 for w in layer_w])
    hi = np.array([w.max() * 2 if w.max() > 0 else w.max() / 2 for w in layer_w])
    init_mean = mean if config.init == "layer" else current

    original_fitness, _ = evaluator.evaluate(current)

    def done(best: np.ndarray) -> bool:
        _, correct = evaluator.evaluate(best)
        return bool(correct.all())

    def on_generation(gen: int, best: np.ndarray, best_fitness: float) -> None:
        _, correct = evaluator.evaluate(best)
        report(
            0.1 + 0.85 * gen / config.generations,
            "search",
            {
                "generation": float(gen),
                "best_fitness": best_fitness,
                "fixed": float(correct[: len(neg)].sum()),
                "broken": float((~correct[len(neg) :]).sum()),
            },
        )

    result = differential_evolution(
        evaluator.fitness,
        current,
        init_mean,
        std,
        lo,
        hi,
        rng,
        pop_size=config.pop_size,
        mutation=(config.mutation_min, config.mutation_max),
        crossover=config.crossover,
        generations=config.generations,
        patience=config.patience,
        should_stop=should_stop,
        done=done,
        on_generation=on_generation,
    )

    patched = result.fitness > original_fitness
    values = result.best if patched else current
    repaired = apply_patch(model, tail, sites, values) if patched else model
    # Judge the outcome with onnxruntime on the repaired model, not with the numpy tail.
    _, repaired_out = capture(repaired, tail, x, config.batch_size, config.threads)
    new_pred = repaired_out.argmax(axis=1)
    metrics.update(
        fixed=float((new_pred[neg] == y[neg]).sum()),
        broken=float((new_pred[pos] != y[pos]).sum()),
        original_fitness=float(original_fitness),
        best_fitness=float(result.fitness),
        generations=float(result.generations),
        evaluations=float(evaluator.evaluations),
        seconds=time.monotonic() - started,
    )
    metrics["stopped_by_deadline"] = float(result.stop_reason == "deadline")
    report(1.0, "done", dict(metrics))
    return ArachneResult(repaired, localised, metrics, patched=bool(patched))
