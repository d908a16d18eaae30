"""The conformance suite's own tiny fault: a dense classifier on synthetic Gaussian blobs with
one corrupted last-layer weight, built directly in ONNX with numpy (no torch, no dataset
download), so the suite runs against any service in seconds and gives the same bytes — and
so the same digests — on every machine.

The network is x (N, F) -> Gemm (torch layout, transB=1) -> Relu -> MatMul + Add -> Softmax.
Its hidden layer computes (relu(x), relu(-x)) and its last layer [V; -V], so before the fault
it outputs softmax(x @ V) exactly and classifies blob k (centred on 3·e_k) as k. The fault
adds `corruption` to the weight from hidden unit `F - 1` (the noise feature) to class 0, so
inputs with a large positive noise feature are pushed to class 0: a misclassification fault
that every kind of approach (fine-tuning, last-layer search, refitting) can reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fixbench.arrays import npz_bytes
from fixbench.v1 import repair_pb2
from fixbench.v1.common_pb2 import Digest

FEATURES = 4
CLASSES = 3
DATASET_NAME = "conformance-blobs"
SENSITIVE_ATTRIBUTE = "blob_side"
# Sizes kept small: the suite runs Fix several times and some approaches train.
SPLIT_SIZES = {"train": 480, "valid": 160, "repair": 160}


class FixtureError(ValueError):
    """Fixture settings that cannot give a usable fault."""


@dataclass(frozen=True)
class Fixture:
    """The fault's bytes: the faulty ONNX model and one .npz per split."""

    model: bytes
    splits: dict[str, bytes]
    input_shape: tuple[int, ...]
    num_classes: int
    failing_repair_inputs: int


def _network(corruption: float) -> onnx.ModelProto:
    v = np.eye(FEATURES, CLASSES, dtype=np.float32)
    w1 = np.concatenate([np.eye(FEATURES), -np.eye(FEATURES)]).astype(np.float32)  # (2F, F): (out, in)
    w2 = np.concatenate([v, -v]).astype(np.float32)  # (2F, C): (in, out)
    w2[FEATURES - 1, 0] += corruption
    nodes = [
        helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["fc1_out"], transB=1, name="fc1"),
        helper.make_node("Relu", ["fc1_out"], ["relu1_out"], name="relu1"),
        helper.make_node("MatMul", ["relu1_out", "fc2.weight"], ["fc2_mm"], name="fc2_matmul"),
        helper.make_node("Add", ["fc2_mm", "fc2.bias"], ["logits"], name="fc2_add"),
        helper.make_node("Softmax", ["logits"], ["output"], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "conformance_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[
            numpy_helper.from_array(w1, "fc1.weight"),
            numpy_helper.from_array(np.zeros(2 * FEATURES, np.float32), "fc1.bias"),
            numpy_helper.from_array(w2, "fc2.weight"),
            numpy_helper.from_array(np.zeros(CLASSES, np.float32), "fc2.bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fixbench-conformance")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _blobs(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    y = rng.integers(0, CLASSES, n)
    x = rng.normal(0.0, 1.0, (n, FEATURES)).astype(np.float32)
    x[np.arange(n), y] += 3.0
    # The sensitive attribute is which side of zero the noise feature falls on; it lets an
    # approach that needs one (fairness repairs) run on the fixture at all.
    group = (x[:, FEATURES - 1] > 0).astype(np.int64)
    return {"x": x, "y": y.astype(np.int64), "group": group}


def _predict(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The fixture network's argmax, in numpy (it is small enough to evaluate by hand)."""
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    hidden = np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0.0)
    return (hidden @ w["fc2.weight"] + w["fc2.bias"]).argmax(axis=1)


def build_fixture(seed: int = 0, corruption: float = 2.5) -> Fixture:
    """The faulty model and its train / valid / repair splits, deterministic in `seed`."""
    if not np.isfinite(corruption) or corruption <= 0:
        raise FixtureError(f"corruption must be a positive finite number, not {corruption!r}")
    model = _network(corruption)
    rng = np.random.default_rng(seed)
    splits = {name: _blobs(rng, size) for name, size in SPLIT_SIZES.items()}
    repair = splits["repair"]
    failing = int((_predict(model, repair["x"]) != repair["y"]).sum())
    if failing == 0:
        raise FixtureError(f"corruption {corruption} makes no repair input fail; raise it")
    return Fixture(
        model=model.SerializeToString(),
        splits={name: npz_bytes(arrays) for name, arrays in splits.items()},
        input_shape=(FEATURES,),
        num_classes=CLASSES,
        failing_repair_inputs=failing,
    )


def dataset_ref(fixture: Fixture, digests: dict[str, Digest], with_sensitive_attribute: bool = True) -> repair_pb2.DatasetRef:
    """A DatasetRef naming the uploaded splits (those missing from `digests` stay empty)."""
    ref = repair_pb2.DatasetRef(
        name=DATASET_NAME, input_shape=list(fixture.input_shape), num_classes=fixture.num_classes, stand_in=True,
        sensitive_attribute=SENSITIVE_ATTRIBUTE if with_sensitive_attribute else "",
    )
    for name, digest in digests.items():
        getattr(ref, name).CopyFrom(digest)
    return ref
