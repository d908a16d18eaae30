"""The service's `evaluate_models` entry point maps the library outcome onto the contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evaluator.service import E, evaluate_models
from fixbench.analysis.errors import UnknownPropertyError


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_ok_result_carries_metrics_notes_and_details(trained) -> None:
    x, y = trained["x_test"], trained["y_test"]
    group = (np.arange(len(y)) % 3).astype(np.int64)
    result = evaluate_models(
        trained["onnx"],
        trained["onnx_other"],
        x,
        y,
        {},
        group=group,
        dataset="digits",
        properties=["accuracy", "fairness"],
        seed=1,
    )
    assert result.status == E.EVALUATION_STATUS_OK
    assert {"acc_before", "rr", "aaod_after"} <= set(result.metrics)
    assert json.loads(result.details_json)["fairness"]["before"]["aaod_pairs"].keys() == {"0-1", "0-2", "1-2"}


def test_accuracy_floor_shorthand_and_same_bytes(trained) -> None:
    x, y = trained["x_test"], trained["y_test"]
    same = evaluate_models(trained["onnx"], trained["onnx"], x, y, {})
    assert same.status == E.EVALUATION_STATUS_OK and same.metrics["rr"] == 0.0
    strict = evaluate_models(trained["onnx"], trained["onnx_other"], x, y, {"accuracy_floor": 1.0})
    assert strict.status == E.EVALUATION_STATUS_CORRUPTED_OUTPUT and "accuracy collapsed" in strict.message


def test_unknown_property_raises(trained) -> None:
    x, y = trained["x_test"], trained["y_test"]
    with pytest.raises(UnknownPropertyError):
        evaluate_models(trained["onnx"], trained["onnx"], x, y, {}, properties=["speed"])


def test_evaluate_rpc_end_to_end(trained, store, tmp_path) -> None:
    """Evaluate over real gRPC: models and split pulled from the artifact store by digest,
    settings as a protobuf Struct, robustness and fairness dispatched."""
    import grpc
    from google.protobuf import struct_pb2

    from evaluator.service import EvaluatorServicer
    from fixbench.arrays import npz_bytes
    from fixbench.grpcutil import Server
    from fixbench.v1 import evaluator_pb2, evaluator_pb2_grpc

    store_server, _, client = store
    x, y = trained["x_test"][:200], trained["y_test"][:200]
    group = (np.arange(len(y)) % 2).astype(np.int64)
    original = client.upload_bytes(trained["onnx"])
    repaired = client.upload_bytes(trained["onnx_other"])
    test = client.upload_bytes(npz_bytes({"x": x, "y": y, "group": group}))
    servicer = EvaluatorServicer(store_server.address, str(tmp_path / "eval-cache"))
    server = Server([lambda s: evaluator_pb2_grpc.add_EvaluatorServicer_to_server(servicer, s)], ["Evaluator"])
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = evaluator_pb2_grpc.EvaluatorStub(channel)
            settings = struct_pb2.Struct()
            settings.update({"robustness": {"samples": 20, "steps": 5}})
            request = evaluator_pb2.EvaluateRequest(
                job_id="job-1",
                original_model=original,
                repaired_model=repaired,
                test=test,
                dataset="digits",
                properties=["accuracy", "robustness", "fairness"],
                settings=settings,
                seed=2,
                sensitive_attribute="parity",
            )
            events = list(stub.Evaluate(request, timeout=60))
            result = events[-1].result
            assert result.status == evaluator_pb2.EVALUATION_STATUS_OK, result.message
            assert result.metrics["robustness_samples"] == 20.0 and "dasr" in result.metrics
            assert "daaod" in result.metrics and "acc_after" in result.metrics
            bad = evaluator_pb2.EvaluateRequest(original_model=original, test=test, properties=["speed"])
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Evaluate(bad, timeout=30))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'speed'" in err.value.details()
    finally:
        server.stop(0)
