"""Shared fixtures: a tiny MLP trained for about a second on scikit-learn's 8x8 digits
(inputs in [0, 1]) and exported to ONNX, in a logits and a softmax-output variant."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from fixbench.onnxio.torch_bridge import torch_to_onnx_bytes


class TinyMLP(torch.nn.Module):
    def __init__(self, softmax: bool = False):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
        )
        self.softmax = softmax

    def forward(self, x):
        out = self.net(x)
        return torch.softmax(out, dim=1) if self.softmax else out


@pytest.fixture(scope="session")
def digits():
    """(x float32 (N, 1, 8, 8) in [0, 1], y int64), first 600 for training, rest for testing."""
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    return x, data.target.astype(np.int64)


def _train(x, y, seed: int, epochs: int = 60) -> TinyMLP:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = TinyMLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def trained(digits):
    """A dict: torch module, ONNX bytes of its logits and softmax versions, and a second,
    differently seeded model standing in for a 'repaired' one."""
    x, y = digits
    model = _train(x[:600], y[:600], seed=0)
    other = _train(x[:600], y[:600], seed=1, epochs=30)
    example = torch.from_numpy(x[:2])
    soft = TinyMLP(softmax=True)
    soft.load_state_dict(model.state_dict())
    return {
        "module": model,
        "onnx": torch_to_onnx_bytes(model, example),
        "onnx_softmax": torch_to_onnx_bytes(soft.eval(), example),
        "onnx_other": torch_to_onnx_bytes(other, example),
        "x_test": x[600:1000],
        "y_test": y[600:1000],
    }


def _gemm_model(weight: np.ndarray, bias: np.ndarray, extra_relu: bool = False, input_dim: int | None = None) -> bytes:
    """A hand-built ONNX linear classifier y = x Wᵀ + b (optionally followed by Relu), for
    tests that need exact control over initializers and graph structure."""
    from onnx import TensorProto, helper, numpy_helper

    in_dim = input_dim if input_dim is not None else weight.shape[1]
    nodes = [helper.make_node("Gemm", ["input", "W", "b"], ["z" if extra_relu else "output"], transB=1)]
    if extra_relu:
        nodes.append(helper.make_node("Relu", ["z"], ["output"]))
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", in_dim])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", weight.shape[0]])],
        [
            numpy_helper.from_array(weight.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture(scope="session")
def gemm_model():
    """The builder of hand-made linear ONNX classifiers (see `_gemm_model`)."""
    return _gemm_model
