"""Issue 18 item 10: Check compares the model's signature with the job's DatasetRef (input
shape, number of classes) and answers UNADAPTABLE with a reason, instead of letting Fix end
in TOOL_ERROR."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fixbench.v1 import repair_pb2
from tests.conftest import dense_classifier
from tests.sdk import test_sdk_server as sdk_tests
from tests.sdk.test_sdk_server import S, run_fix

repair_env = sdk_tests.repair_env  # the in-process Echo service fixture


def _scalar_output_model() -> bytes:
    """x (N, 4) -> Gemm -> ReduceSum over the classes: one number per input, not class scores."""
    w = np.eye(4, 3, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["logits"]),
         helper.make_node("ReduceSum", ["logits", "axes"], ["score"], keepdims=0)],
        "scalar", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(3, np.float32), "b"),
                     numpy_helper.from_array(np.array([1], np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _check(stub, job):
    return stub.Check(repair_pb2.CheckRequest(job=job))


@pytest.mark.parametrize("change,reason", [
    (lambda j: j.data.input_shape.__setitem__(0, 5), "takes inputs of shape [4], but the data holds inputs of shape [5]"),
    (lambda j: (j.data.ClearField("input_shape"), j.data.input_shape.extend([2, 2])),
     "takes inputs of shape [4], but the data holds inputs of shape [2, 2]"),
    (lambda j: setattr(j.data, "num_classes", 10), "scores 3 classes, but the data has 10"),
])
def test_a_model_that_does_not_fit_the_data_is_unadaptable(repair_env, change, reason):
    stub, job = repair_env
    j = job("fix")
    change(j)
    answer = _check(stub, j)
    assert not answer.adaptable and reason in answer.reason, answer.reason
    _, result = run_fix(stub, j)
    assert result.status == S.REPAIR_STATUS_UNADAPTABLE and reason in result.message


def test_a_scalar_output_is_unadaptable(repair_env):
    stub, job = repair_env
    answer = _check(stub, job("fix", model=_scalar_output_model()))
    assert not answer.adaptable and "not one score per class" in answer.reason, answer.reason


def test_a_fitting_model_stays_adaptable(repair_env):
    stub, job = repair_env
    assert _check(stub, job("fix")).adaptable
    w = np.eye(4, 3, dtype=np.float32)
    assert _check(stub, job("fix", model=dense_classifier(w, np.zeros(3, np.float32), softmax=False)
                            .SerializeToString())).adaptable
