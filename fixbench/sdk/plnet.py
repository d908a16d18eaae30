"""A piecewise-linear view of an ONNX classifier, for solver- and verification-based repairs
(3M-DNN, provable repair, VeRe): is the graph a plain chain of piecewise-linear operations,
where its dense tail starts, the tail's weights as numpy arrays, the tail's input features
computed with onnxruntime, and a copy of the model with new tail weights.

numpy + onnx + onnxruntime only (no torch), so services on any stack can use it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

# Operations that are affine or piecewise linear in their one dynamic input (with the other
# inputs constant): a chain of them is a piecewise-linear network.
PIECEWISE_LINEAR_OPS = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "PRelu",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization", "Flatten", "Reshape",
    "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Pad", "Clip", "Neg",
})
# Monotone, argmax-preserving final operations: constraints are put on their input (logits).
FINAL_OPS = frozenset({"Softmax", "LogSoftmax"})
# Nodes that compute shapes, never activations.
_SHAPE_OPS = frozenset({"Shape", "Size", "Constant", "ConstantOfShape"})


class UnsupportedNetwork(ValueError):
    """The model is not of the form the method handles; the message says why."""


@dataclass
class DenseLayer:
    """One fully-connected layer of the tail: z = a @ w + b, then optionally ReLU.

    `w` is always (in, out) float64; `transposed` says the initializer is stored (out, in)
    (Gemm transB=1, torch's layout). `pre` is the tensor holding z, `post` the tensor after
    the ReLU (or z itself)."""

    weight: str
    bias: str | None
    w: np.ndarray
    b: np.ndarray
    transposed: bool
    input: str
    pre: str
    relu: bool = False
    post: str = ""
    node: str = ""          # output tensor of the node that reads the weight
    bias_node: str = ""     # output tensor of the node that reads the bias
    bias_input: str = ""    # the tensor name that node reads (an initializer or its Identity copy)

    @property
    def name(self) -> str:
        return self.weight


@dataclass
class DenseTail:
    """The dense layers ending the network, in forward order, and what follows them."""

    features: str
    layers: list[DenseLayer]
    final_op: onnx.NodeProto | None = None
    feature_dim: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def logits(self) -> str:
        return self.layers[-1].post

    def forward(self, a0: np.ndarray, weights: dict[int, tuple[np.ndarray, np.ndarray]] | None = None) -> list[np.ndarray]:
        """Activations [a0, a1, ..., logits] for features a0 (float64), with optional new
        (w, b) per layer index."""
        acts = [np.asarray(a0, dtype=np.float64)]
        for i, layer in enumerate(self.layers):
            w, b = (weights or {}).get(i, (layer.w, layer.b))
            z = acts[-1] @ w + b
            acts.append(np.maximum(z, 0.0) if layer.relu else z)
        return acts

    def pre_activations(self, a0: np.ndarray) -> list[np.ndarray]:
        """Pre-activations z1..zn of every layer for features a0."""
        out, a = [], np.asarray(a0, dtype=np.float64)
        for layer in self.layers:
            z = a @ layer.w + layer.b
            out.append(z)
            a = np.maximum(z, 0.0) if layer.relu else z
        return out

    def logits_of(self, a0: np.ndarray, weights=None) -> np.ndarray:
        return self.forward(a0, weights)[-1]


class _Graph:
    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.model = model
        self.inits = {t.name: t for t in g.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in g.node:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)
        self.outputs = [o.name for o in g.output]
        self.static = set(self.inits)
        # Constants and anything computed only from constants and shapes is static.
        for node in g.node:
            dynamic_in = [i for i in node.input if i and i not in self.static]
            if node.op_type in _SHAPE_OPS or not dynamic_in:
                self.static.update(node.output)
        self.input = next((i.name for i in g.input if i.name not in self.inits), None)

    def array(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def resolve(self, name: str) -> str:
        """The initializer behind a chain of Identity copies (torch's exporter shares equal
        constants that way), or `name` itself."""
        node = self.producer.get(name)
        while name not in self.inits and node is not None and node.op_type == "Identity":
            name = node.input[0]
            node = self.producer.get(name)
        return name

    def dynamic_inputs(self, node: onnx.NodeProto) -> list[str]:
        return [i for i in node.input if i and i not in self.static]


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _describe(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node {node.name or node.output[0]!r}"


def sequential_problem(model: onnx.ModelProto) -> str | None:
    """Why the model is not a plain sequential piecewise-linear network, or None when it is.

    Plain sequential: every activation-computing node reads exactly one activation tensor and
    every activation tensor is read by at most one node (no skip / residual connections, no
    concatenation of feature maps); every node is affine or piecewise linear, except one
    final Softmax / LogSoftmax."""
    g = _Graph(model)
    if g.input is None:
        return "the model has no data input"
    for node in model.graph.node:
        if all(o in g.static for o in node.output if o):
            continue
        dyn = g.dynamic_inputs(node)
        if len(dyn) > 1:
            kind = "concatenates feature maps (dense connectivity)" if node.op_type == "Concat" else \
                "joins two activation paths (a residual / skip connection)" if node.op_type in ("Add", "Sum") else \
                "reads two activation tensors"
            return f"not a plain sequential network: {_describe(node)} {kind}"
        if node.op_type in FINAL_OPS:
            if any(o not in g.outputs for o in node.output[:1]):
                return f"{_describe(node)} is not the last operation, so the network is not piecewise linear"
            continue
        if node.op_type not in PIECEWISE_LINEAR_OPS:
            return f"not piecewise linear: {_describe(node)} ({node.op_type} is not affine or piecewise linear)"
    for name, readers in g.consumers.items():
        if name in g.static:
            continue
        readers = [r for r in readers if r.op_type not in _SHAPE_OPS]
        if len(readers) > 1:
            return (f"not a plain sequential network: tensor {name!r} is read by {len(readers)} nodes "
                    f"({', '.join(r.op_type for r in readers)}), a branching graph")
    return None


def _skip_through(g: _Graph, name: str) -> str:
    """Follows Identity / Dropout (inference no-ops) backwards."""
    node = g.producer.get(name)
    while node is not None and node.op_type in ("Identity", "Dropout"):
        name = node.input[0]
        node = g.producer.get(name)
    return name


def _dense_at(g: _Graph, name: str) -> DenseLayer | str:
    """The dense layer whose output is tensor `name`, or why there is none."""
    node = g.producer.get(name)
    if node is None:
        return f"{name!r} is the graph input"
    if node.op_type == "Gemm":
        if _attr(node, "transA", 0):
            return f"{_describe(node)} transposes its input"
        if float(_attr(node, "alpha", 1.0)) != 1.0 or float(_attr(node, "beta", 1.0)) != 1.0:
            return f"{_describe(node)} scales by alpha/beta"
        w = g.array(node.input[1]) if node.input[1] in g.inits else None
        if w is None or w.ndim != 2:
            return f"{_describe(node)} has no constant 2-D weight"
        transposed = bool(_attr(node, "transB", 0))
        wm = w.T if transposed else w
        read = node.input[2] if len(node.input) > 2 and node.input[2] else None
        bias = g.resolve(read) if read else None
        b = g.array(bias) if bias else np.zeros(wm.shape[1])
        if bias and (bias not in g.inits or b is None or b.size != wm.shape[1]):
            return f"{_describe(node)} has a bias that is not a per-unit constant"
        return DenseLayer(node.input[1], bias, wm.astype(np.float64), b.reshape(-1).astype(np.float64),
                          transposed, node.input[0], name, post=name, node=node.output[0],
                          bias_node=node.output[0] if bias else "", bias_input=read or "")
    if node.op_type == "Add":
        other = [i for i in node.input if g.resolve(i) in g.inits]
        dyn = [i for i in node.input if g.resolve(i) not in g.inits]
        if len(other) != 1 or len(dyn) != 1:
            return f"{_describe(node)} is not a bias addition"
        mm = g.producer.get(dyn[0])
        if mm is None or mm.op_type != "MatMul" or mm.input[1] not in g.inits:
            return f"{_describe(node)} does not add a bias to a constant MatMul"
        if len(g.consumers.get(dyn[0], [])) != 1:
            return f"the MatMul output {dyn[0]!r} is read elsewhere"
        w = g.array(mm.input[1])
        bias = g.resolve(other[0])
        b = g.array(bias)
        if w.ndim != 2 or b.size != w.shape[1]:
            return f"{_describe(node)}: weight / bias shapes do not form a dense layer"
        return DenseLayer(mm.input[1], bias, w.astype(np.float64), b.reshape(-1).astype(np.float64), False,
                          mm.input[0], name, post=name, node=mm.output[0], bias_node=node.output[0],
                          bias_input=other[0])
    if node.op_type == "MatMul" and node.input[1] in g.inits:
        w = g.array(node.input[1])
        if w.ndim != 2:
            return f"{_describe(node)} has no 2-D weight"
        return DenseLayer(node.input[1], None, w.astype(np.float64), np.zeros(w.shape[1]), False, node.input[0],
                          name, post=name, node=node.output[0])
    return f"{name!r} is computed by {_describe(node)}, not by a dense layer"


def dense_tail(model: onnx.ModelProto) -> DenseTail:
    """The fully-connected layers (Gemm or MatMul[+Add], each optionally followed by ReLU)
    that end the network, before an optional final Softmax / LogSoftmax. Raises
    UnsupportedNetwork with the reason when the network does not end in one."""
    g = _Graph(model)
    if len(g.outputs) != 1:
        raise UnsupportedNetwork(f"the model has {len(g.outputs)} outputs; one (class scores) is needed")
    name = _skip_through(g, g.outputs[0])
    final = None
    node = g.producer.get(name)
    if node is not None and node.op_type in FINAL_OPS:
        axis = int(_attr(node, "axis", -1))
        if axis not in (-1, 1):
            raise UnsupportedNetwork(f"{_describe(node)} is not over the class axis")
        final = node
        name = _skip_through(g, node.input[0])
    layers: list[DenseLayer] = []
    pending_relu: str | None = None  # the ReLU output tensor above the layer being parsed
    while True:
        parsed = _dense_at(g, name)
        if isinstance(parsed, str):
            if not layers:
                raise UnsupportedNetwork(f"the network does not end in a dense layer: {parsed}")
            break
        if pending_relu is not None:
            parsed.relu, parsed.post = True, pending_relu
        layers.insert(0, parsed)
        inp = _skip_through(g, parsed.input)
        node = g.producer.get(inp)
        if node is not None and node.op_type == "Relu" and len(g.consumers.get(node.input[0], [])) == 1:
            pending_relu = inp
            name = _skip_through(g, node.input[0])
            # A ReLU whose input is not a dense layer belongs to the features.
            if isinstance(_dense_at(g, name), str):
                break
        else:
            break
    # The tail's input: what the first layer reads.
    first = layers[0]
    # Every tail tensor must be read only along the chain.
    for layer in layers:
        for t in {layer.pre, layer.post}:
            readers = [r for r in g.consumers.get(t, []) if r.op_type not in _SHAPE_OPS]
            if len(readers) > 1:
                raise UnsupportedNetwork(f"tensor {t!r} of the dense tail is read by {len(readers)} nodes")
    for a, b in zip(layers, layers[1:], strict=False):
        if a.w.shape[1] != b.w.shape[0]:
            raise UnsupportedNetwork(f"dense layers {a.weight!r} and {b.weight!r} do not chain ({a.w.shape} then {b.w.shape})")
    if layers[-1].relu:
        # A ReLU directly on the class scores: keep it as part of the tail.
        pass
    return DenseTail(features=first.input, layers=layers, final_op=final, feature_dim=int(first.w.shape[0]))


def _session(model: onnx.ModelProto, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def capture(model: onnx.ModelProto, tensors: list[str], x: np.ndarray, batch_size: int = 256,
            threads: int = 1) -> list[np.ndarray]:
    """The values of intermediate `tensors` (and nothing else) for inputs x, with onnxruntime."""
    m = copy.deepcopy(model)
    have = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in have:
            m.graph.output.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    sess = _session(m, threads)
    in_name = sess.get_inputs()[0].name
    out: list[list[np.ndarray]] = [[] for _ in tensors]
    x = np.asarray(x, dtype=np.float32)
    for i in range(0, len(x), batch_size):
        values = sess.run(tensors, {in_name: x[i:i + batch_size]})
        for k, v in enumerate(values):
            out[k].append(np.asarray(v))
    return [np.concatenate(v).reshape(len(x), -1) if v else np.zeros((0, 0)) for v in out]


def tail_features(model: onnx.ModelProto, tail: DenseTail, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """Inputs of the dense tail for x, checked against the model's own logits (so a tail that
    numpy evaluates differently from onnxruntime is refused, not silently mis-repaired)."""
    feats, logits = capture(model, [tail.features, tail.logits], x, threads=threads)
    if feats.shape[1] != tail.feature_dim:
        raise UnsupportedNetwork(f"the dense tail reads {feats.shape[1]} features, its first layer expects {tail.feature_dim}")
    mine = tail.logits_of(feats)
    scale = max(1.0, float(np.abs(logits).max(initial=0.0)))
    if len(x) and float(np.abs(mine - logits).max()) > 1e-3 * scale:
        raise UnsupportedNetwork("the dense tail evaluated with numpy disagrees with onnxruntime on the model's logits")
    return feats.astype(np.float64)


def _set_tensor(m: onnx.ModelProto, reader_output: str, read_name: str, init_name: str, value: np.ndarray) -> None:
    """Stores `value` for the tensor that node `reader_output` reads as `read_name`: in place
    when only that node uses the initializer, else as a new initializer only it reads (so a
    constant the exporter shared between layers is not changed for the others)."""
    inits = {t.name: t for t in m.graph.initializer}
    old = numpy_helper.to_array(inits[init_name])
    stored = np.asarray(value).astype(old.dtype).reshape(old.shape)
    readers = [n for n in m.graph.node if init_name in n.input]
    reader = next(n for n in m.graph.node if reader_output in n.output)
    if read_name == init_name and readers == [reader]:
        inits[init_name].CopyFrom(numpy_helper.from_array(stored, init_name))
        return
    taken = set(inits) | {o for n in m.graph.node for o in n.output}
    new = f"{init_name}.repaired"
    k = 1
    while new in taken:
        k += 1
        new = f"{init_name}.repaired{k}"
    m.graph.initializer.append(numpy_helper.from_array(stored, new))
    for i, name in enumerate(reader.input):
        if name == read_name:
            reader.input[i] = new


def with_tail_weights(model: onnx.ModelProto, tail: DenseTail,
                      weights: dict[int, tuple[np.ndarray, np.ndarray]]) -> onnx.ModelProto:
    """A copy of the model with new (w (in, out), b) for the given tail layer indices, stored
    in each initializer's own layout and dtype."""
    m = copy.deepcopy(model)
    for i, (w, b) in weights.items():
        layer = tail.layers[i]
        _set_tensor(m, layer.node, layer.weight, layer.weight, w.T if layer.transposed else w)
        if layer.bias is not None:
            _set_tensor(m, layer.bias_node, layer.bias_input, layer.bias, b)
        elif np.any(np.asarray(b) != 0):
            raise UnsupportedNetwork(f"layer {layer.weight!r} has no bias to change")
    return m


def changed_weights(tail: DenseTail, weights: dict[int, tuple[np.ndarray, np.ndarray]], top: int = 200,
                    tol: float = 1e-9) -> list[tuple[str, tuple[int, ...], float]]:
    """(initializer, index in its stored layout, |change|) of the largest changes, largest first."""
    rows: list[tuple[str, tuple[int, ...], float]] = []
    for i, (w, b) in weights.items():
        layer = tail.layers[i]
        dw = np.abs(np.asarray(w) - layer.w)
        for idx in np.argwhere(dw > tol):
            r, c = int(idx[0]), int(idx[1])
            rows.append((layer.weight, (c, r) if layer.transposed else (r, c), float(dw[r, c])))
        if layer.bias is not None:
            db = np.abs(np.asarray(b) - layer.b)
            rows += [(layer.bias, (int(k),), float(db[k])) for k in np.nonzero(db > tol)[0]]
    rows.sort(key=lambda r: -r[2])
    return rows[:top]


def margins(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Correct-class score minus the best other class score, per row."""
    logits = np.asarray(logits, dtype=np.float64)
    idx = np.arange(len(y))
    other = logits.copy()
    other[idx, y] = -np.inf
    return logits[idx, y] - other.max(axis=1)
