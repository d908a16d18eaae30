"""The suite against raw Repair servicers written without the SDK: a correct one passes every
check (so the suite judges the contract, not the SDK), and each deliberate breach of the
contract fails the check that owns it — and only the checks that depend on it."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2

from fixbench.artifacts.client import ArtifactClient, ArtifactError
from fixbench.conformance import ConformanceSuite, SuiteSettings
from fixbench.conformance.suite import REPAIR_SERVICE
from fixbench.grpcutil import Server
from fixbench.onnxio import InvalidModelError, load_model
from fixbench.v1 import repair_pb2, repair_pb2_grpc
from tests.conftest import dense_classifier

S = repair_pb2.RepairStatus
# Short limits: every breach below must be caught in seconds, not minutes.
SETTINGS = SuiteSettings(budget=5.0, tiny_budget=0.2, grace=1.5, rpc_timeout=3.0, cancel_settle=0.2)


class RawRepair(repair_pb2_grpc.RepairServicer):
    """A hand-written 'baseline': validates its inputs like the contract asks, streams a few
    progress events and ends NOT_REPAIRED. `breach` names one contract violation to commit."""

    def __init__(self, store_address: str, cache_dir: str, breach: str = ""):
        self.store = ArtifactClient(store_address, cache_dir, timeout=5)
        self.breach = breach
        self.results: dict[str, repair_pb2.RepairResult] = {}
        self.calls = 0
        self.lock = threading.Lock()
        # Set when the test is over, so that a deliberately hanging call does not outlive it.
        self.released = threading.Event()

    def Describe(self, request, context):
        info = repair_pb2.DescribeResponse(
            name="raw", version="1.0.0", level=repair_pb2.REPAIR_LEVEL_BASELINE, summary="returns nothing, honestly",
            needs=[repair_pb2.NEED_REPAIR_DATA], execution_provider="CPUExecutionProvider",
            parameters=[repair_pb2.ParameterSpec(name="rounds", type="int", default_json="3", help="progress events")],
        )
        if self.breach == "bad-describe":
            info.version = ""
            info.parameters[0].default_json = '"three"'
        return info

    def _validate(self, job, context) -> str | None:
        """The refusal reason, or None; aborts with the contract's codes on bad requests."""
        params = json_format.MessageToDict(job.params)
        if set(params) - {"rounds"} and self.breach != "accepts-unknown-parameter":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown parameters {sorted(set(params) - {'rounds'})}")
        if not job.data.repair.sha256 and self.breach != "adaptable-without-needs":
            return "raw needs repair data"
        if self.breach == "hangs-on-unknown-digest" and not self.store.stat(job.model).present:
            self.released.wait(30)
        try:
            data = self.store.fetch_bytes(job.model)
        except ArtifactError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        if self.breach != "accepts-bad-model":
            try:
                load_model(data)
            except InvalidModelError as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return None

    def Check(self, request, context):
        reason = self._validate(request.job, context)
        if self.breach == "refuses-without-reason" and reason:
            return repair_pb2.CheckResponse(adaptable=False)
        return repair_pb2.CheckResponse(adaptable=reason is None, reason=reason or "")

    def Fix(self, request, context):
        job = request.job
        reason = self._validate(job, context)
        if reason:
            if self.breach == "errors-when-unadaptable":
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, reason)
            yield repair_pb2.FixResponse(result=repair_pb2.RepairResult(status=S.REPAIR_STATUS_UNADAPTABLE, message=reason))
            return
        with self.lock:
            self.calls += 1
            recorded = self.results.get(job.job_id)
        if recorded is not None and self.breach != "not-idempotent":
            yield repair_pb2.FixResponse(result=recorded)
            return
        start = time.monotonic()
        try:
            self.store.fetch_bytes(job.data.repair)  # the data it declares it needs
        except ArtifactError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        rounds = int(json_format.MessageToDict(job.params).get("rounds", 3))
        for i in range(rounds):
            yield repair_pb2.FixResponse(progress=repair_pb2.Progress(fraction=(i + 1) / rounds, stage="work"))
        if self.breach == "ignores-budget" and job.budget.wall_seconds < 1:
            self.released.wait(job.budget.wall_seconds + 3)
        if self.breach == "no-result":
            return
        result = repair_pb2.RepairResult(status=S.REPAIR_STATUS_NOT_REPAIRED, message="raw changes nothing")
        if self.breach == "changed-signature":
            wider = dense_classifier(np.eye(4, 5, dtype=np.float32), np.zeros(5, np.float32)).SerializeToString()
            result = repair_pb2.RepairResult(status=S.REPAIR_STATUS_REPAIRED, repaired_model=self.store.upload_bytes(wider))
        if self.breach == "not-idempotent":
            result.status = S.REPAIR_STATUS_NOT_REPAIRED if self.calls % 2 else S.REPAIR_STATUS_TIMEOUT
        if self.breach == "silent-failure":
            result = repair_pb2.RepairResult(status=S.REPAIR_STATUS_TOOL_ERROR)
        result.timings.total_seconds = time.monotonic() - start
        with self.lock:
            self.results[job.job_id] = result
        yield repair_pb2.FixResponse(result=result)
        if self.breach == "two-results":
            yield repair_pb2.FixResponse(result=result)


def run_suite(store, tmp_path, breach: str = "", after_start=None):
    store_server, _, _ = store
    servicer = RawRepair(store_server.address, str(tmp_path / f"raw-cache-{breach}"), breach)
    server = Server([lambda s: repair_pb2_grpc.add_RepairServicer_to_server(servicer, s)], ["Repair"])
    if after_start:
        after_start(server)
    try:
        return ConformanceSuite(server.address, store_server.address, settings=SETTINGS, run_id="t").run()
    finally:
        servicer.released.set()
        server.stop(0)
        servicer.store.close()


def test_a_correct_service_without_the_sdk_passes(store, tmp_path):
    report = run_suite(store, tmp_path)
    assert report.ok, [(c.name, c.detail) for c in report.failures]
    statuses = report.by_name()
    assert statuses["fix-stream"].status == "pass" and "NOT_REPAIRED" in statuses["fix-stream"].detail
    assert statuses["unknown-digest"].detail.startswith("Check (model): NOT_FOUND")
    assert report.service == "raw 1.0.0" and "CONFORMS" in report.summary()


@pytest.mark.parametrize("breach,check,text", [
    ("no-result", "fix-stream", "without a result"),
    ("two-results", "fix-stream", "sent 2 results"),
    ("changed-signature", "fix-stream", "changed the signature"),
    ("silent-failure", "fix-stream", "carries no message"),
    ("not-idempotent", "idempotency", "the same job_id gave"),
    ("accepts-bad-model", "bad-model", "expected an error status"),
    ("accepts-unknown-parameter", "unknown-parameter", "expected an error status"),
    ("hangs-on-unknown-digest", "unknown-digest", "a hang, not an error"),
    ("adaptable-without-needs", "check-missing-need", "is called adaptable"),
    ("refuses-without-reason", "check-missing-need", "without a reason"),
    ("errors-when-unadaptable", "fix-missing-need", "instead of an UNADAPTABLE result"),
    ("ignores-budget", "budget", "budget took"),
    ("bad-describe", "describe", "version is empty"),
])
def test_each_breach_fails_its_check(store, tmp_path, breach, check, text):
    report = run_suite(store, tmp_path, breach)
    result = report.by_name()[check]
    assert result.status == "fail" and text in result.detail, result
    assert not report.ok and "DOES NOT CONFORM" in report.summary()


def test_bad_describe_names_every_problem_and_stops_the_run(store, tmp_path):
    report = run_suite(store, tmp_path, "bad-describe")
    detail = report.by_name()["describe"].detail
    assert "version is empty" in detail and "parameter 'rounds': default \"three\" is not a int" in detail
    # Without a trustworthy Describe the job-level checks cannot be built: skipped, saying why.
    assert {c.status for c in report.checks[3:]} == {"skip"}


def test_a_breach_fails_only_what_depends_on_it(store, tmp_path):
    report = run_suite(store, tmp_path, "accepts-unknown-parameter")
    assert [c.name for c in report.failures] == ["unknown-parameter"]


def test_not_serving_health_fails(store, tmp_path):
    def not_serving(server):
        server.health.set(REPAIR_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)

    report = run_suite(store, tmp_path, after_start=not_serving)
    assert report.status_of("health") == "fail" and "NOT_SERVING" in report.by_name()["health"].detail


def test_a_store_the_service_does_not_read_skips_the_job_checks(store, tmp_path):
    """run_conformance without a store: the fixture goes to a store of the suite's own, which
    the service (reading its own store) cannot see; the job checks say so instead of failing."""
    from fixbench.conformance import run_conformance

    store_server, _, _ = store
    servicer = RawRepair(store_server.address, str(tmp_path / "raw-cache"))
    server = Server([lambda s: repair_pb2_grpc.add_RepairServicer_to_server(servicer, s)], ["Repair"])
    try:
        report = run_conformance(server.address, None, settings=SETTINGS)
    finally:
        server.stop(0)
    assert report.ok and report.store_address != store_server.address
    assert report.status_of("describe") == "pass"
    assert report.status_of("fix-stream") == "skip" and "pass the store it uses" in report.by_name()["fix-stream"].detail


def test_cli_exits_non_zero_and_prints_the_table_on_a_breach(store, tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    store_server, _, _ = store
    servicer = RawRepair(store_server.address, str(tmp_path / "raw-cache"), "no-result")
    server = Server([lambda s: repair_pb2_grpc.add_RepairServicer_to_server(servicer, s)], ["Repair"])
    try:
        result = CliRunner().invoke(app, ["conformance", server.address, "--store", store_server.address,
                                          "--budget", "5", "--grace", "2"])
    finally:
        server.stop(0)
    assert result.exit_code == 1, result.output
    assert "raw 1.0.0: DOES NOT CONFORM" in result.output and "without a result" in " ".join(result.output.split())


def test_parameters_the_service_does_not_declare_are_the_callers_mistake(store, tmp_path):
    from typer.testing import CliRunner

    from fixbench.conformance import SuiteUsageError
    from orchestrator.cli import app

    store_server, _, _ = store
    servicer = RawRepair(store_server.address, str(tmp_path / "raw-cache"))
    server = Server([lambda s: repair_pb2_grpc.add_RepairServicer_to_server(servicer, s)], ["Repair"])
    try:
        with pytest.raises(SuiteUsageError, match="parameter\\(s\\) epochs given to the suite are not declared by raw; it declares: rounds"):
            ConformanceSuite(server.address, store_server.address, params={"epochs": 3}, settings=SETTINGS).run()
        result = CliRunner().invoke(app, ["conformance", server.address, "--store", store_server.address, "--param", "epochs=3"])
    finally:
        server.stop(0)
    assert result.exit_code == 2 and "not declared by raw" in result.output
