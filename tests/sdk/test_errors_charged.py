"""Issue 18 item 9: errors are charged to the party that made them. A service's uncaught
error (gRPC UNKNOWN) is the approach's TOOL_ERROR, never a retried infrastructure error; a
mistyped parameter is INVALID_ARGUMENT; a missing or malformed split digest in Fix is
NOT_FOUND / INVALID_ARGUMENT; an evaluator failure on the original model is the fault's."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from fixbench.v1 import repair_pb2
from fixbench.v1.common_pb2 import Digest
from tests.sdk import test_sdk_server as sdk_tests
from tests.sdk.test_sdk_server import run_fix

repair_env = sdk_tests.repair_env  # the in-process Echo service fixture


def test_a_mistyped_parameter_is_invalid_argument_not_unknown(repair_env):
    stub, job = repair_env
    for call in (lambda j: stub.Check(repair_pb2.CheckRequest(job=j)), lambda j: run_fix(stub, j)):
        with pytest.raises(grpc.RpcError) as err:
            call(job("fix", steps="eight"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert "steps" in err.value.details() and "integer" in err.value.details()


@pytest.mark.parametrize("digest,code", [
    (Digest(sha256="0" * 64, size_bytes=10), grpc.StatusCode.NOT_FOUND),
    (Digest(sha256="not-a-digest", size_bytes=10), grpc.StatusCode.INVALID_ARGUMENT),
])
def test_a_bad_split_digest_in_fix_is_a_bad_request_not_infra(repair_env, digest, code):
    stub, job = repair_env
    j = job("fix")
    j.data.repair.CopyFrom(digest)
    with pytest.raises(grpc.RpcError) as err:
        run_fix(stub, j)
    assert err.value.code() == code, err.value.details()


def _rpc_error(code, details="boom"):
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_a_services_unknown_error_is_the_approachs_tool_error():
    from orchestrator.scheduler import InfraFailure, Scheduler

    s = Scheduler.__new__(Scheduler)
    outcome = s._rpc_failure("Fix", _rpc_error(grpc.StatusCode.UNKNOWN, "Exception calling application: x"), "svc:1")
    assert outcome.status == "TOOL_ERROR" and "uncaught error" in outcome.message
    # The transport failing is still the infrastructure's, and retried.
    with pytest.raises(InfraFailure):
        s._rpc_failure("Fix", _rpc_error(grpc.StatusCode.UNAVAILABLE), "svc:1")


def test_an_evaluator_failure_on_the_original_model_is_the_faults_error(monkeypatch, store, tmp_path):
    from evaluator import properties as props
    from evaluator.service import EvaluatorServicer
    from fixbench.arrays import npz_bytes
    from fixbench.grpcutil import Server
    from fixbench.v1 import evaluator_pb2, evaluator_pb2_grpc
    from tests.conftest import blob_dataset, dense_classifier

    def broken(original_bytes, x, *keys):
        raise RuntimeError("onnxruntime: Non-zero status code returned while running Gemm node")

    monkeypatch.setattr(props, "_original_scores", broken)
    store_server, _, client = store
    w = np.eye(4, 3, dtype=np.float32)
    model = client.upload_bytes(dense_classifier(w, np.zeros(3, np.float32)).SerializeToString())
    x, y = blob_dataset(0)
    test = client.upload_bytes(npz_bytes({"x": x, "y": y}))
    servicer = EvaluatorServicer(store_server.address, str(tmp_path / "eval-cache"))
    server = Server([lambda s: evaluator_pb2_grpc.add_EvaluatorServicer_to_server(servicer, s)], ["Evaluator"])
    try:
        with grpc.insecure_channel(server.address) as ch:
            stub = evaluator_pb2_grpc.EvaluatorStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Evaluate(evaluator_pb2.EvaluateRequest(original_model=model, test=test,
                                                                 properties=["accuracy"]), timeout=30))
    finally:
        server.stop(0)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "the fault's original model" in err.value.details() and "Gemm" in err.value.details()


def test_the_orchestrator_names_a_fault_error_as_such(monkeypatch):
    import asyncio

    from orchestrator.evaluator_client import EvaluatorClient, FaultError

    class Stub:
        def Evaluate(self, request, timeout):
            async def fail():
                raise _rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "the fault's original model fails: x")
                yield  # pragma: no cover - makes this an async generator

            return fail()

    client = EvaluatorClient("unused:1")
    # monkeypatch puts the class's own property back: deleting it left every later
    # EvaluatorClient in the process without a stub (the chaos tests failed after this one)
    monkeypatch.setattr(EvaluatorClient, "stub", property(lambda self: Stub()))
    fault = type("F", (), {"id": "kim-c2", "digests": {n: {"sha256": "a" * 64, "size_bytes": 1}
                                                        for n in ("model", "test", "repair")},
                           "dataset": "d", "sensitive_attribute": ""})()
    with pytest.raises(FaultError) as err:
        asyncio.run(client.evaluate("k" * 64, fault, Digest(), 0, ["accuracy"], {}, 10))
    assert err.value.status == "FAULT_ERROR" and "fault kim-c2" in str(err.value)
