"""Hostile files that arrive where a model or a data split is expected, each with the words
its rejection must contain. Built in code (no files checked in) and small: the danger is in
what they declare, not in their size."""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The pickle payload would create this file if anything unpickled it.
PWNED = "/tmp/fixbench-hostile-pwned"


def _classifier(nodes, extra_inits=(), input_dims=("batch", 4), opsets=()) -> onnx.ModelProto:
    """x (N, 4) -> <nodes producing 'z'> -> Gemm -> probs (N, 3)."""
    inits = [numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "W"),
             numpy_helper.from_array(np.zeros(3, np.float32), "b"), *extra_inits]
    graph = helper.make_graph(
        [*nodes, helper.make_node("Gemm", ["z", "W", "b"], ["probs"], name="dense")], "hostile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_dims))],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), *opsets])
    model.ir_version = 8
    return model


def _identity() -> list[onnx.NodeProto]:
    return [helper.make_node("Identity", ["x"], ["z"])]


def _external(tensor: onnx.TensorProto, location: str) -> onnx.TensorProto:
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    return tensor


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def deeply_nested_model(depth: int = 2000) -> bytes:
    """ModelProto bytes whose graph nests If → then_branch → If … `depth` times: written by
    hand because protobuf itself refuses to build it (the parser must refuse it too)."""
    graph = _field(1, _field(4, b"Identity"))  # GraphProto{node{op_type}}
    for _ in range(depth):
        attr = _field(1, b"then_branch") + _field(6, graph) + _varint(20 << 3) + _varint(5)  # g, type=GRAPH
        graph = _field(1, _field(4, b"If") + _field(5, attr))  # GraphProto{node{op_type, attribute}}
    return _varint(1 << 3) + _varint(8) + _field(7, graph)  # ir_version=8, graph


def hostile_models() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, a phrase the rejection message must contain)."""
    cases: dict[str, tuple[bytes, str]] = {}

    m = _classifier(_identity())
    _external(m.graph.initializer[0], "../../../../etc/passwd")
    cases["external-data-leaving-folder"] = (m.SerializeToString(), "external data (location '../../../../etc/passwd')")

    const = _external(helper.make_tensor("c", TensorProto.FLOAT, [4], [0, 0, 0, 0]), "../secrets.bin")
    m = _classifier([helper.make_node("Constant", [], ["c"], value=const), helper.make_node("Add", ["x", "c"], ["z"])])
    cases["external-data-in-constant"] = (m.SerializeToString(), "refers to external data (location '../secrets.bin')")

    m = _classifier(_identity())
    del m.graph.initializer[0].dims[:]
    m.graph.initializer[0].dims.extend([1 << 20, 1 << 20])
    cases["huge-declared-initializer"] = (m.SerializeToString(), "over the limit of")

    shape = numpy_helper.from_array(np.array([1 << 17, 1 << 17], np.int64), "shape")
    m = _classifier([helper.make_node("ConstantOfShape", ["shape"], ["big"]),
                     helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
                     helper.make_node("Add", ["x", "total"], ["z"])], [shape])
    cases["huge-inferred-intermediate"] = (m.SerializeToString(), "would hold 17179869184 elements")

    m = _classifier(_identity(), input_dims=("batch", 1 << 40))
    cases["huge-declared-input"] = (m.SerializeToString(), "impossible dimension")

    m = _classifier([helper.make_node("Relu", ["b2"], ["a2"]), helper.make_node("Relu", ["a2"], ["b2"]),
                     helper.make_node("Add", ["x", "a2"], ["z"])])
    cases["cyclic-graph"] = (m.SerializeToString(), "topologically sorted")

    cases["deeply-nested-subgraphs"] = (deeply_nested_model(), "protobuf parse failed")

    m = _classifier([helper.make_node("Exfiltrate", ["x"], ["z"], domain="com.evil")],
                    opsets=[helper.make_opsetid("com.evil", 1)])
    cases["custom-op-domain"] = (m.SerializeToString(), "custom operator domain 'com.evil'")

    branch = helper.make_graph([helper.make_node("Exfiltrate", ["x"], ["t"], domain="com.evil")], "branch", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    m = _classifier([helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("v", TensorProto.BOOL, [], [True])),
                     helper.make_node("If", ["cond"], ["z"], then_branch=branch, else_branch=branch)],
                    opsets=[helper.make_opsetid("com.evil", 1)])
    cases["custom-op-in-subgraph"] = (m.SerializeToString(), "custom operator domain 'com.evil'")

    recursive = helper.make_function("local", "Loopy", ["a"], ["b"], [helper.make_node("Loopy", ["a"], ["b"], domain="local")],
                                     [helper.make_opsetid("", 17)])
    m = _classifier([helper.make_node("Loopy", ["x"], ["z"], domain="local")], opsets=[helper.make_opsetid("local", 1)])
    m.functions.append(recursive)
    cases["recursive-local-function"] = (m.SerializeToString(), "custom operator domain 'local'")

    m = _classifier(_identity())
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.full((4, 3), np.nan, np.float32), "W"))
    cases["nan-weights"] = (m.SerializeToString(), "initializer 'W' holds NaN or Inf")

    inf = numpy_helper.from_array(np.array([np.inf, 0, 0, 0], np.float32), "c")
    m = _classifier([helper.make_node("Constant", [], ["c"], value=inf), helper.make_node("Add", ["x", "c"], ["z"])])
    cases["inf-constant"] = (m.SerializeToString(), "holds NaN or Inf")

    m = _classifier(_identity())
    m.graph.initializer[0].raw_data = b"\x00" * 7
    cases["truncated-raw-data"] = (m.SerializeToString(), "too small for the declared shape")

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:  # the layout of a torch.save() checkpoint
        z.writestr("model/data.pkl", pickle.dumps({"state_dict": {"w": [1.0, 2.0]}}))
        z.writestr("model/version", "3\n")
    cases["zip-checkpoint-as-model"] = (archive.getvalue(), "not an ONNX model")
    rce = f"cos\nsystem\n(S'touch {PWNED}'\ntR.".encode()
    cases["pickle-as-model"] = (rce, "not an ONNX model")
    cases["empty-file"] = (b"", "empty")
    cases["random-bytes"] = (np.random.default_rng(0).bytes(4096), "not an ONNX model")
    return cases


def hostile_splits() -> dict[str, tuple[bytes, str]]:
    """Data splits (.npz expected) that must be refused without unpickling anything."""
    obj = io.BytesIO()
    np.savez(obj, x=np.array([object()], dtype=object), y=np.zeros(1, np.int64))
    rce = io.BytesIO()
    with zipfile.ZipFile(rce, "w") as z:
        z.writestr("x.npy", f"cos\nsystem\n(S'touch {PWNED}'\ntR.")
        y = io.BytesIO()
        np.save(y, np.zeros(1, np.int64))
        z.writestr("y.npy", y.getvalue())
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w") as z:  # a header claiming 2^33 float32 over 8 bytes of data
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 33,)})
        z.writestr("x.npy", header.getvalue() + b"\x00" * 8)
        z.writestr("y.npy", y.getvalue())
    return {
        "declared-shape-bomb": (bomb.getvalue(), "declares shape (8589934592,)"),
        "object-array-split": (obj.getvalue(), "allow_pickle=False"),
        "pickle-in-npz": (rce.getvalue(), "is not a .npy array"),
        "not-a-zip": (b"PK\x03\x04" + b"\x00" * 64, "not a readable .npz split"),
    }
