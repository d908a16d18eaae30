"""Provable pointwise repair of one layer (PRDNN: Sotoudeh & Thakur, "Provable Repair of Deep
Neural Networks", PLDI 2021).

PRDNN repairs a *Decoupled* DNN: every non-linearity of the original network is split into an
activation channel (the original weights, which decides each ReLU's on/off pattern) and a value
channel (which carries the values, gated by that pattern). Changing one layer of the value
channel leaves every activation pattern fixed, so the output on any given input is an affine
function of that layer's weights. Asking every repair point to be classified with a margin is
then a set of linear constraints, and the smallest (L∞ or L1) change satisfying them is one LP
(the original solves it with Gurobi; here HiGHS). The result is provably correct on every
repair point. When the repaired layer is the last one, the decoupled network equals the plain
network with the new last layer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fixbench.sdk import plnet
from fixbench.sdk.min_change_lp import LPResult, Rows, min_change

INF = float("inf")


@dataclass
class RepairProblem:
    a_in: np.ndarray      # (P, in) inputs of the repaired layer (activation channel = value channel before it)
    z: np.ndarray         # (P, out) its pre-activations
    jac: np.ndarray       # (P, C, out) d logits / d pre-activation of the layer, patterns fixed
    logits: np.ndarray    # (P, C)
    y: np.ndarray         # (P,) required labels


def resolve_layer(tail: plnet.DenseTail, layer: int) -> int:
    """A tail index from a Python-style index (-1 = the last dense layer)."""
    n = len(tail.layers)
    if not -n <= layer < n:
        raise plnet.UnsupportedNetwork(f"the dense tail has {n} layer(s); layer={layer} is out of range")
    return layer % n


def build_problem(tail: plnet.DenseTail, k: int, a0: np.ndarray, y: np.ndarray) -> RepairProblem:
    acts = tail.forward(a0)
    pres = tail.pre_activations(a0)
    layers = tail.layers
    n_out = layers[k].w.shape[1]
    p = len(a0)
    # Jacobian of the logits w.r.t. layer k's pre-activation with every pattern fixed.
    jac = np.broadcast_to(np.eye(n_out), (p, n_out, n_out)).copy()
    if layers[k].relu:
        jac *= (pres[k] > 0)[:, None, :].transpose(0, 2, 1)
    for j in range(k + 1, len(layers)):
        jac = np.einsum("io,pik->pok", layers[j].w, jac)
        if layers[j].relu:
            jac *= (pres[j] > 0)[:, :, None]
    return RepairProblem(acts[k], pres[k], jac, acts[-1], np.asarray(y, dtype=np.int64))


def constraint_rows(prob: RepairProblem, margin: float) -> Rows:
    """(logit_y − logit_c)(Δ) >= margin for every point and every other class c, with
    Δ = (ΔW (in, out) row-major, Δb (out)) of the repaired layer."""
    p, n_in = prob.a_in.shape
    n_out = prob.z.shape[1]
    n_cls = prob.logits.shape[1]
    rows = Rows(n_in * n_out + n_out)
    a1 = np.concatenate([prob.a_in, np.ones((p, 1))], axis=1)
    for k in range(p):
        t = int(prob.y[k])
        for c in range(n_cls):
            if c == t:
                continue
            g = prob.jac[k, t] - prob.jac[k, c]          # (out,)
            nz = np.nonzero(g)[0]
            if len(nz) == 0:
                rhs = margin - float(prob.logits[k, t] - prob.logits[k, c])
                # Nothing in this layer moves this margin: satisfied or impossible as it is.
                rows.add(np.zeros(0, np.int64), np.zeros(0), rhs, INF)
                continue
            coef = np.outer(a1[k, :n_in], g[nz])          # (in, |nz|) for ΔW[i, o]
            idx_w = (np.arange(n_in)[:, None] * n_out + nz[None, :]).reshape(-1)
            idx = np.concatenate([idx_w, n_in * n_out + nz])
            val = np.concatenate([coef.reshape(-1), g[nz]])
            rows.add(idx, val, margin - float(prob.logits[k, t] - prob.logits[k, c]), INF)
    return rows


def solve(prob: RepairProblem, margin: float, norm: str, time_limit: float, seed: int = 0) -> tuple[LPResult, np.ndarray | None, np.ndarray | None]:
    rows = constraint_rows(prob, margin)
    # A row with no coefficients is a constant: an impossible one makes the LP infeasible,
    # which HiGHS reports; empty rows are dropped first so the matrix stays well formed.
    keep_rows = Rows(rows.n)
    for i in range(len(rows)):
        lo, hi = rows.indptr[i], rows.indptr[i + 1]
        if hi == lo:
            if rows.lower[i] > 0:
                return LPResult("Infeasible (a margin this layer cannot move)", None), None, None
            continue
        keep_rows.add(rows.indices[i], rows.values[i], rows.lower[i], rows.upper[i])
    res = min_change(keep_rows, norm, time_limit, seed)
    if not res.ok:
        return res, None, None
    n_in, n_out = prob.a_in.shape[1], prob.z.shape[1]
    return res, res.delta[: n_in * n_out].reshape(n_in, n_out), res.delta[n_in * n_out:]


def decoupled_logits(tail: plnet.DenseTail, k: int, a0: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The decoupled network's logits in numpy: patterns from the original weights, values
    through the new layer k."""
    pres = tail.pre_activations(a0)
    acts = tail.forward(a0)
    v = acts[k] @ w + b
    for j in range(k, len(tail.layers)):
        layer = tail.layers[j]
        if j > k:
            v = v @ layer.w + layer.b
        if layer.relu:
            v = v * (pres[j] > 0)
    return v


def decoupled_model(model: onnx.ModelProto, tail: plnet.DenseTail, k: int, w: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    """The decoupled DNN as ONNX: the original graph is the activation channel; a value channel
    starts at layer k with the new weights and, after every later ReLU of the original, is
    multiplied by that ReLU's on/off pattern (Greater(pre, 0) cast to float) instead of being
    rectified itself. The graph output becomes the value channel's output."""
    if k == len(tail.layers) - 1:
        return plnet.with_tail_weights(model, tail, {k: (w, b)})
    m = copy.deepcopy(model)
    g = m.graph
    out_name = g.output[0].name
    # The activation channel's copy of the output gets another name; dead parts are pruned below.
    for node in g.node:
        for i, o in enumerate(node.output):
            if o == out_name:
                node.output[i] = f"{out_name}.activation_channel"
    taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output}

    def fresh(name: str) -> str:
        new, i = name, 1
        while new in taken:
            i += 1
            new = f"{name}{i}"
        taken.add(new)
        return new

    dtype = numpy_helper.to_array(next(t for t in g.initializer if t.name == tail.layers[k].weight)).dtype
    zero = fresh("prdnn.zero")
    g.initializer.append(numpy_helper.from_array(np.zeros((), dtype), zero))
    wk, bk = fresh(f"prdnn.value.{tail.layers[k].weight}"), fresh(f"prdnn.value.{tail.layers[k].weight}.bias")
    g.initializer.append(numpy_helper.from_array(w.astype(dtype), wk))
    g.initializer.append(numpy_helper.from_array(np.asarray(b).astype(dtype), bk))
    nodes = []
    v = tail.layers[k].input
    for j in range(k, len(tail.layers)):
        layer = tail.layers[j]
        pre = fresh(f"prdnn.value.pre{j}")
        if j == k:
            nodes.append(helper.make_node("Gemm", [v, wk, bk], [pre], name=fresh(f"prdnn_value_gemm{j}")))
        else:
            inputs = [v, layer.weight] + ([layer.bias_input] if layer.bias is not None else [])
            nodes.append(helper.make_node("Gemm", inputs, [pre], transB=int(layer.transposed),
                                          name=fresh(f"prdnn_value_gemm{j}")))
        v = pre
        if layer.relu:
            on, mask, gated = fresh(f"prdnn.on{j}"), fresh(f"prdnn.mask{j}"), fresh(f"prdnn.value{j}")
            nodes += [
                helper.make_node("Greater", [layer.pre, zero], [on], name=fresh(f"prdnn_pattern{j}")),
                helper.make_node("Cast", [on], [mask], to=int(onnx.helper.np_dtype_to_tensor_dtype(dtype)),
                                 name=fresh(f"prdnn_cast{j}")),
                helper.make_node("Mul", [pre, mask], [gated], name=fresh(f"prdnn_gate{j}")),
            ]
            v = gated
    if tail.final_op is not None:
        final = helper.make_node(tail.final_op.op_type, [v], [out_name], name=fresh("prdnn_final"))
        final.attribute.extend(tail.final_op.attribute)
        nodes.append(final)
    else:
        nodes.append(helper.make_node("Identity", [v], [out_name], name=fresh("prdnn_out")))
    g.node.extend(nodes)
    _prune(m)
    onnx.checker.check_model(m)
    return m


def _prune(m: onnx.ModelProto) -> None:
    """Removes nodes and initializers that no graph output depends on."""
    g = m.graph
    needed = {o.name for o in g.output}
    keep = []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
