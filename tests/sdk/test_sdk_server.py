"""The approach SDK behind a real in-process gRPC server: status mapping, budget,
cancellation, validation of inputs and outputs, progress streaming, idempotency."""

import time

import grpc
import numpy as np
import onnx
import pytest
from google.protobuf import struct_pb2
from onnx import numpy_helper

from fixbench.arrays import npz_bytes
from fixbench.grpcutil import Server, channel
from fixbench.sdk import Approach, Outcome, Param, Unadaptable
from fixbench.sdk import server as sdk_server
from fixbench.sdk.server import RepairServicer
from fixbench.v1 import repair_pb2, repair_pb2_grpc
from tests.conftest import blob_dataset, dense_classifier

S = repair_pb2.RepairStatus


NAPS: list[tuple[float, float]] = []


class Echo(Approach):
    """Returns the model with one weight set from a parameter (fixes inputs when large)."""

    name, version, level = "echo", "1.0.0", "neuron"
    params = (Param("mode", str, "fix", "what to do"), Param("steps", int, 3, "progress steps"))
    fault_families = ("misclassification",)
    uses_torch = False

    @classmethod
    def validate_params(cls, params):
        if params["steps"] < 0:
            raise ValueError("steps must be >= 0")

    def check(self, ctx):
        return "mode says no" if ctx.params["mode"] == "unadaptable-check" else None

    def repair(self, ctx):
        mode = ctx.params["mode"]
        for i in range(ctx.params["steps"]):
            ctx.progress((i + 1) / ctx.params["steps"], "work", f"step {i}")
        if mode == "crash":
            raise ZeroDivisionError("boom")
        if mode == "oom":
            raise MemoryError()
        if mode == "unadaptable":
            raise Unadaptable("found out late")
        if mode == "loop":
            while True:
                ctx.check()
                time.sleep(0.01)
        if mode == "ignore-budget":
            time.sleep(30)
        if mode == "nap":
            start = time.monotonic()
            time.sleep(0.4)
            ctx.check()  # would raise had the budget started while the job queued
            NAPS.append((start, time.monotonic()))
            mode = "fix"
        if mode == "wait-cancel":
            while not ctx.cancelled:
                time.sleep(0.01)
            ctx.check()
        model = onnx.ModelProto()
        model.CopyFrom(ctx.model)
        w = numpy_helper.to_array(model.graph.initializer[0]).copy()
        if mode == "nan":
            w[0, 0] = np.nan
            model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "W"))
            return Outcome(model=model.SerializeToString())
        if mode == "overflow":
            # Finite weights (valid ONNX) whose outputs are NaN: the check on the repair split,
            # which now runs after the upload, is what finds it corrupted.
            w[:] = 3e38
            w[1::2] = -3e38
            model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "W"))
            return Outcome(model=model)
        if mode == "fix":
            w[3, :] = 0.0  # the fault below put a large weight here
            model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "W"))
        return Outcome(model=model)


@pytest.fixture
def repair_env(store, tmp_path):
    store_server, _, client = store
    w = np.zeros((4, 3), np.float32)
    w[0, 0] = w[1, 1] = w[2, 2] = 1.0
    w[3, 0] = 2.0  # the fault: feature 3 pushes towards class 0
    faulty = dense_classifier(w, np.zeros(3, np.float32)).SerializeToString()
    x, y = blob_dataset(0)
    x[:, 3] = np.abs(x[:, 3]) * 2
    split = client.upload_bytes(npz_bytes({"x": x, "y": y}))
    servicer = RepairServicer(Echo, store_server.address, str(tmp_path / "svc-cache"))
    server = Server([lambda s: repair_pb2_grpc.add_RepairServicer_to_server(servicer, s)], ["Repair"])
    ch = channel(server.address)

    def job(mode="fix", model=faulty, budget=30.0, job_id="", **params):
        p = struct_pb2.Struct()
        p.update({"mode": mode, **params})
        return repair_pb2.RepairJob(
            job_id=job_id, model=client.upload_bytes(model), params=p, seed=1,
            data=repair_pb2.DatasetRef(repair=split, valid=split, input_shape=[4], num_classes=3),
            budget=repair_pb2.Budget(wall_seconds=budget),
        )

    yield repair_pb2_grpc.RepairStub(ch), job
    ch.close()
    server.stop(0)


def run_fix(stub, job, timeout=60):
    events = list(stub.Fix(repair_pb2.FixRequest(job=job), timeout=timeout))
    assert events[-1].WhichOneof("event") == "result"
    return events[:-1], events[-1].result


def test_describe_is_generated_from_the_declaration(repair_env):
    stub, _ = repair_env
    info = stub.Describe(repair_pb2.DescribeRequest())
    assert info.name == "echo" and info.level == repair_pb2.REPAIR_LEVEL_NEURON
    assert [(p.name, p.type, p.default_json) for p in info.parameters] == [("mode", "str", '"fix"'), ("steps", "int", "3")]
    assert info.execution_provider == "CPUExecutionProvider"


def test_repaired_with_progress_and_upload(repair_env):
    stub, job = repair_env
    events, result = run_fix(stub, job("fix"))
    # "started": the SDK's own event when the budget clock starts (the repair left the queue).
    assert [e.progress.stage for e in events if e.WhichOneof("event") == "progress"] == ["started"] + ["work"] * 3
    assert result.status == S.REPAIR_STATUS_REPAIRED, result.message
    assert result.repaired_model.sha256 and result.metrics["repair_fixed"] > 0
    assert result.timings.total_seconds >= result.timings.repair_seconds > 0


def test_the_uploaded_model_is_announced_before_the_result(repair_env):
    """The SDK uploads the repaired model before its own check on the repair split ends and
    says so in one log line (the orchestrator starts evaluating it meanwhile); the line names
    the very digest of the result. A model that came back unchanged is not announced."""
    stub, job = repair_env
    events, result = run_fix(stub, job("fix"))
    notices = [sdk_server.parse_output_notice(e.log) for e in events if e.WhichOneof("event") == "log"]
    notices = [n for n in notices if n is not None]
    assert notices == [(result.repaired_model.sha256, result.repaired_model.size_bytes)]
    events, _ = run_fix(stub, job("same"))
    assert not [e for e in events if e.WhichOneof("event") == "log" and sdk_server.parse_output_notice(e.log)]


def test_a_model_found_corrupted_after_its_upload_is_not_the_result(repair_env):
    stub, job = repair_env
    events, result = run_fix(stub, job("overflow"))
    assert result.status == S.REPAIR_STATUS_CORRUPTED_OUTPUT and "NaN or Inf outputs" in result.message
    assert not result.repaired_model.sha256  # announced (stored for nothing), never the result
    assert any(e.WhichOneof("event") == "log" and sdk_server.parse_output_notice(e.log) for e in events)


def test_unchanged_model_is_not_repaired(repair_env):
    stub, job = repair_env
    _, result = run_fix(stub, job("same"))
    assert result.status == S.REPAIR_STATUS_NOT_REPAIRED and "came back unchanged" in result.message
    assert result.repaired_model == job("same").model


@pytest.mark.parametrize("mode,status,text", [
    ("crash", S.REPAIR_STATUS_TOOL_ERROR, "ZeroDivisionError: boom"),
    ("oom", S.REPAIR_STATUS_OOM, "out of memory"),
    ("unadaptable", S.REPAIR_STATUS_UNADAPTABLE, "found out late"),
    ("nan", S.REPAIR_STATUS_CORRUPTED_OUTPUT, "NaN"),
])
def test_exceptions_and_bad_outputs_map_to_statuses(repair_env, mode, status, text):
    stub, job = repair_env
    _, result = run_fix(stub, job(mode))
    assert result.status == status and text in result.message


def test_budget_checked_cooperatively_is_timeout(repair_env):
    stub, job = repair_env
    start = time.monotonic()
    _, result = run_fix(stub, job("loop", budget=0.5))
    assert result.status == S.REPAIR_STATUS_TIMEOUT and time.monotonic() - start < 5


def test_budget_ignored_is_cut_off(repair_env, monkeypatch):
    monkeypatch.setattr(sdk_server, "BUDGET_GRACE_SECONDS", 0.5)
    stub, job = repair_env
    start = time.monotonic()
    _, result = run_fix(stub, job("ignore-budget", budget=0.5))
    assert result.status == S.REPAIR_STATUS_TIMEOUT and "no result within the budget" in result.message
    assert time.monotonic() - start < 5


def test_check_reports_unadaptable_with_reason(repair_env):
    stub, job = repair_env
    reply = stub.Check(repair_pb2.CheckRequest(job=job("unadaptable-check")))
    assert not reply.adaptable and reply.reason == "mode says no"
    _, result = run_fix(stub, job("unadaptable-check"))
    assert result.status == S.REPAIR_STATUS_UNADAPTABLE


def test_missing_needs_are_unadaptable(repair_env):
    stub, job = repair_env
    j = job("fix")
    j.data.ClearField("repair")
    reply = stub.Check(repair_pb2.CheckRequest(job=j))
    assert not reply.adaptable and "repair data" in reply.reason


@pytest.mark.parametrize("model,text", [
    (b"definitely not onnx", "not an ONNX model"),
    (b"", "empty"),
])
def test_bad_models_are_invalid_argument(repair_env, model, text):
    stub, job = repair_env
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(repair_pb2.CheckRequest(job=job("fix", model=model)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and text in err.value.details()


def test_model_failing_checker_and_nan_weights_are_refused(repair_env):
    stub, job = repair_env
    w = np.eye(4, 3, dtype=np.float32)
    broken = dense_classifier(w, np.zeros(3, np.float32))
    broken.graph.node[0].input[1] = "missing_tensor"
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(repair_pb2.CheckRequest(job=job("fix", model=broken.SerializeToString())))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "onnx.checker" in err.value.details()
    w[0, 0] = np.inf
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(repair_pb2.CheckRequest(job=job("fix", model=dense_classifier(w, np.zeros(3)).SerializeToString())))
    assert "NaN or Inf" in err.value.details()


def test_unknown_parameter_is_invalid_argument(repair_env):
    stub, job = repair_env
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(repair_pb2.CheckRequest(job=job("fix", bogus=1)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no parameter(s) bogus" in err.value.details()


def test_cancellation_reaches_the_approach(repair_env):
    stub, job = repair_env
    call = stub.Fix(repair_pb2.FixRequest(job=job("wait-cancel", steps=1)), timeout=30)
    first = next(call)
    assert first.WhichOneof("event") == "progress"
    call.cancel()
    with pytest.raises(grpc.RpcError) as err:
        list(call)
    assert err.value.code() == grpc.StatusCode.CANCELLED


def test_same_job_id_returns_the_recorded_result(repair_env):
    stub, job = repair_env
    j = job("fix", job_id="job-1")
    _, first = run_fix(stub, j)
    events, second = run_fix(stub, j)
    assert second == first and "already finished" in events[0].log


def test_wrong_fault_family_is_unadaptable(repair_env):
    stub, job = repair_env
    j = job("fix")
    j.fault_family, j.fault_id = "training_recipe", "f-lr"
    reply = stub.Check(repair_pb2.CheckRequest(job=j))
    assert not reply.adaptable and reply.reason == "echo repairs misclassification faults; f-lr is a training-recipe fault"
    assert list(stub.Describe(repair_pb2.DescribeRequest()).fault_families) == ["misclassification"]


def test_parameter_values_are_validated_by_the_approach(repair_env):
    stub, job = repair_env
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(repair_pb2.CheckRequest(job=job("fix", steps=-1)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "steps must be >= 0" in err.value.details()


def test_concurrent_jobs_take_turns_and_each_budget_starts_at_its_turn(repair_env):
    import concurrent.futures

    stub, job = repair_env
    NAPS.clear()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda i: run_fix(stub, job("nap", budget=0.7, job_id=f"nap-{i}"))[1], range(2)))
    assert [r.status for r in results] == [S.REPAIR_STATUS_REPAIRED] * 2, [r.message for r in results]
    (a_start, a_end), (b_start, b_end) = sorted(NAPS)
    assert a_end <= b_start  # never two repairs at once in one process: seeding is process-global
