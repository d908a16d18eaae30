"""The suite against the real approach services, each started as a local process with its own
store (as `fixbench conformance --service` does), and against a freshly scaffolded approach."""

from __future__ import annotations

import runpy
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fixbench.conformance import ConformanceSuite, Report, SuiteSettings, run_service_conformance
from fixbench.grpcutil import Server
from fixbench.sdk import Approach, Outcome
from fixbench.sdk.server import RepairServicer
from fixbench.v1 import repair_pb2_grpc
from orchestrator.cli import app
from orchestrator.cli_scaffold import new_approach

SERVICES = Path(__file__).resolve().parents[2] / "services"


def assert_conforms(report: Report) -> None:
    failures = report.failures
    assert not failures, f"{report.summary()}: {[(c.name, c.detail) for c in failures]}\n{report.log_tail}"
    assert report.status_of("describe") == "pass" and report.status_of("fix-stream") == "pass"


def test_noop_conforms():
    report = run_service_conformance(SERVICES / "noop")
    assert_conforms(report)
    assert "then NOT_REPAIRED" in report.by_name()["fix-stream"].detail
    # noop needs nothing and repairs every family: nothing to refuse, said so.
    assert report.status_of("check-missing-need") == "skip"


def test_arachne_conforms_and_repairs_the_fixture():
    report = run_service_conformance(SERVICES / "arachne")
    assert_conforms(report)
    assert "then REPAIRED" in report.by_name()["fix-stream"].detail
    assert report.status_of("check-missing-need") == "pass"


@pytest.mark.slow
def test_finetune_conforms_and_repairs_the_fixture():
    # More epochs than the default so that fine-tuning reaches the REPAIRED path (torch export).
    report = run_service_conformance(SERVICES / "finetune", params={"epochs": 60, "patience": 60})
    assert_conforms(report)
    assert "then REPAIRED" in report.by_name()["fix-stream"].detail


def test_a_scaffolded_approach_conforms_unchanged(tmp_path):
    folder = new_approach("demo", dest=tmp_path)
    report = run_service_conformance(folder)
    assert report.ok, [(c.name, c.detail) for c in report.failures]
    assert report.service == "demo 0.1.0" and "then REPAIRED" in report.by_name()["fix-stream"].detail
    # The generated test runs the same suite and passes as generated.
    runpy.run_path(str(folder / "test_conformance.py"))["test_service_passes_the_conformance_suite"]()


def test_cli_runs_the_suite_on_a_service_folder():
    result = CliRunner().invoke(app, ["conformance", "--service", str(SERVICES / "noop")])
    assert result.exit_code == 0, result.output
    assert "noop 1.0.0: CONFORMS" in result.output and "fix-stream" in result.output


class WaitsToBeCancelled(Approach):
    """Reports once, then works silently for a second (long enough to be cancelled mid-run;
    silence keeps the SDK's stream waiting for the run's end, as with finetune's epochs)."""

    name, version, level, summary = "slow", "1.0.0", "baseline", "works for a second, then gives up"
    needs = ()
    uses_torch = False

    def repair(self, ctx):
        ctx.progress(0.0, "wait")
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            ctx.check()  # raises Cancelled once the caller has gone
            time.sleep(0.02)
        return Outcome(model=None, message="waited, changed nothing")


def test_sdk_reruns_cancelled_jobs(store, tmp_path):
    store_server, _, _ = store
    servicer = RepairServicer(WaitsToBeCancelled, store_server.address, str(tmp_path / "cache"))
    server = Server([lambda s: repair_pb2_grpc.add_RepairServicer_to_server(servicer, s)], ["Repair"])
    try:
        settings = SuiteSettings(budget=10.0, grace=3.0, rpc_timeout=5.0, cancel_settle=0.5)
        report = ConformanceSuite(server.address, store_server.address, settings=settings).run()
    finally:
        server.stop(0)
    assert report.status_of("cancellation") == "pass"
    assert report.status_of("cancelled-job-reruns") == "pass", report.by_name()["cancelled-job-reruns"].detail


class RecordsItsBudget(Approach):
    """Gives up at once, recording the budget each Fix asked for."""

    name, version, level, summary = "budget-echo", "1.0.0", "baseline", "records the job's budget"
    needs = ()
    uses_torch = False
    seen: list = []

    def repair(self, ctx):
        RecordsItsBudget.seen.append((ctx.job.budget.wall_seconds, ctx.job.budget.max_trials))
        return Outcome(model=None, message="recorded the budget, changed nothing")


def test_the_suite_passes_a_trial_cap_to_every_full_fix_run(store, tmp_path):
    # A search approach spends its whole wall budget unless a trial cap ends it: the suite's
    # max_trials reaches the job, and the tiny-budget check keeps its own wall budget.
    store_server, _, _ = store
    RecordsItsBudget.seen = []
    servicer = RepairServicer(RecordsItsBudget, store_server.address, str(tmp_path / "cache"))
    server = Server([lambda s: repair_pb2_grpc.add_RepairServicer_to_server(servicer, s)], ["Repair"])
    try:
        settings = SuiteSettings(budget=7.0, max_trials=3, grace=3.0, rpc_timeout=5.0, cancel_settle=0.2)
        report = ConformanceSuite(server.address, store_server.address, settings=settings).run()
    finally:
        server.stop(0)
    assert_conforms(report)
    assert (7.0, 3) in RecordsItsBudget.seen and all(trials == 3 for _, trials in RecordsItsBudget.seen)
    assert {wall for wall, _ in RecordsItsBudget.seen} == {7.0, settings.tiny_budget}


def test_cli_refuses_a_negative_trial_cap():
    result = CliRunner().invoke(app, ["conformance", "--service", str(SERVICES / "noop"), "--max-trials", "-1"])
    assert result.exit_code != 0 and "max-trials" in result.output.replace("_", "-").lower()
