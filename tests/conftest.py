"""Fixtures shared by the fast tier: tiny ONNX classifiers and in-process gRPC servers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fixbench.artifacts.client import ArtifactClient
from fixbench.artifacts.disk import DiskStore
from fixbench.artifacts.server import ArtifactsServicer
from fixbench.grpcutil import Server
from fixbench.v1 import artifacts_pb2_grpc


def dense_classifier(weights: np.ndarray, bias: np.ndarray, softmax: bool = True) -> onnx.ModelProto:
    """x (N, F) -> Gemm -> [Softmax]: the smallest real classifier, built directly in ONNX."""
    features, classes = weights.shape
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["logits"], name="dense")]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"))
        out = "probs"
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", classes])],
        initializer=[numpy_helper.from_array(weights.astype(np.float32), "W"),
                     numpy_helper.from_array(bias.astype(np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def blob_dataset(seed: int, n: int = 120, features: int = 4, classes: int = 3):
    """Gaussian blobs: class k centred on 3·e_k, so the identity-like classifier is right."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 1.0, (n, features)).astype(np.float32)
    x[np.arange(n), y] += 3.0
    return x, y.astype(np.int64)


@pytest.fixture
def tiny_model() -> onnx.ModelProto:
    w = np.zeros((4, 3), np.float32)
    w[0, 0] = w[1, 1] = w[2, 2] = 1.0
    return dense_classifier(w, np.zeros(3, np.float32))


@pytest.fixture
def store(tmp_path):
    """A running artifact store (max blob 8 MiB) and a client with its own cache."""
    disk = DiskStore(tmp_path / "store", max_blob_bytes=8 * 1024 * 1024)
    server = Server([lambda s: artifacts_pb2_grpc.add_ArtifactsServicer_to_server(ArtifactsServicer(disk), s)],
                    ["Artifacts"])
    client = ArtifactClient(server.address, tmp_path / "client-cache", timeout=30)
    yield server, disk, client
    client.close()
    server.stop(0)


def interruptible() -> None:
    """preexec_fn for a child process a test will Ctrl-C: SIGINT back to its default. A shell
    that runs a command in the background without job control (`cmd &`, nohup, some CI
    runners) starts it with SIGINT ignored, every descendant inherits that, and Python then
    installs no KeyboardInterrupt handler: the child would never see the test's Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)

