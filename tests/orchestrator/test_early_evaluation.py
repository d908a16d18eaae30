"""The scheduler starts a job's Evaluate on the SDK's upload notice, while the service still
checks its output, and uses that evaluation only when the final result names the same
digest; otherwise it is cancelled and the result's own model (if any) is evaluated afresh."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from fixbench.sdk.server import output_notice, parse_output_notice
from fixbench.v1 import evaluator_pb2, repair_pb2
from fixbench.v1.common_pb2 import Digest
from orchestrator.scheduler import Scheduler

S = repair_pb2.RepairStatus
D = Digest(sha256="a" * 64, size_bytes=1234)
OTHER = Digest(sha256="b" * 64, size_bytes=1234)


class StreamCall:
    """A Fix call whose events the test hands over one at a time."""

    def __init__(self):
        self.events: asyncio.Queue = asyncio.Queue()

    async def read(self):
        return await self.events.get()

    def cancel(self):
        pass


class Evaluator:
    """Records each Evaluate; each takes until the test releases it."""

    def __init__(self):
        self.calls: list[dict] = []
        self.release = asyncio.Event()

    async def evaluate(self, key, fault, repaired, seed, properties, settings, timeout):
        call = {"digest": repaired.sha256, "cancelled": False, "done": False}
        self.calls.append(call)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            call["cancelled"] = True
            raise
        call["done"] = True
        return evaluator_pb2.EvaluationResult(status=evaluator_pb2.EvaluationStatus.EVALUATION_STATUS_OK,
                                              metrics={"acc_after": 90.0 if repaired.sha256 == D.sha256 else 80.0})


def _scheduler() -> tuple[Scheduler, Evaluator]:
    scheduler = Scheduler.__new__(Scheduler)
    scheduler.on_progress = lambda job, fraction, stage: None
    scheduler.job_logs = SimpleNamespace(line=lambda key, line: None)
    scheduler.spec = SimpleNamespace(evaluation=SimpleNamespace(properties=["accuracy"], settings={}))
    scheduler._early, scheduler._evaluate_spans, scheduler.early_evaluation = {}, {}, True
    scheduler.evaluator = Evaluator()
    return scheduler, scheduler.evaluator


def _job():
    message = repair_pb2.RepairJob(job_id="k", model=Digest(sha256="f" * 64, size_bytes=10))
    return SimpleNamespace(key="k", message=message, approach=SimpleNamespace(concurrency=1), fault=None, seed=0)


def _result(status, digest=None):
    result = repair_pb2.RepairResult(status=status, message="m")
    if digest is not None:
        result.repaired_model.CopyFrom(digest)
    return repair_pb2.FixResponse(result=result)


def test_notice_round_trips_and_other_lines_are_not_notices():
    assert parse_output_notice(output_notice(D)) == (D.sha256, D.size_bytes)
    assert parse_output_notice("epoch 3: valid acc 0.97") is None
    bad = output_notice(D).replace("a" * 64, "../" + "a" * 61)
    assert parse_output_notice(bad) is None
    assert parse_output_notice(output_notice(D).replace(" 1234", " -5")) is None


def _fake_stub(monkeypatch, call_holder):
    class Stub:
        def __init__(self, channel):
            pass

        async def Check(self, request, timeout):
            return repair_pb2.CheckResponse(adaptable=True)

        def Fix(self, request):
            return call_holder["call"]

    monkeypatch.setattr("orchestrator.scheduler.repair_pb2_grpc.RepairStub", Stub)


async def _attempt(monkeypatch, lines, final, early_evaluation=True):
    scheduler, evaluator = _scheduler()
    scheduler.early_evaluation = early_evaluation
    scheduler._channel = lambda address: None
    holder = {"call": StreamCall()}
    _fake_stub(monkeypatch, holder)
    attempt = asyncio.create_task(scheduler._attempt(_job(), "127.0.0.1:1"))
    for line in lines:
        holder["call"].events.put_nowait(repair_pb2.FixResponse(log=line))
    for _ in range(50):
        await asyncio.sleep(0)
    started_early = [dict(c) for c in evaluator.calls]
    holder["call"].events.put_nowait(final)
    for _ in range(50):
        await asyncio.sleep(0)
    evaluator.release.set()
    outcome = await asyncio.wait_for(attempt, 5)
    for _ in range(5):
        await asyncio.sleep(0)
    return outcome, evaluator, started_early, scheduler


def test_the_early_evaluation_is_used_when_the_result_names_its_digest(monkeypatch):
    outcome, evaluator, early, scheduler = asyncio.run(
        _attempt(monkeypatch, [output_notice(D)], _result(S.REPAIR_STATUS_REPAIRED, D)))
    assert [c["digest"] for c in early] == [D.sha256]  # started before the result came
    assert [c["digest"] for c in evaluator.calls] == [D.sha256]  # and not asked again
    assert outcome.status == "REPAIRED" and outcome.metrics["acc_after"] == 90.0
    assert outcome.result["evaluate_overlap_seconds"] > 0
    assert outcome.result["evaluate_seconds"] >= outcome.result["evaluate_overlap_seconds"]
    assert not scheduler._early and not scheduler._evaluate_spans


def test_an_early_evaluation_of_another_digest_is_cancelled_and_the_result_evaluated(monkeypatch):
    outcome, evaluator, _, scheduler = asyncio.run(
        _attempt(monkeypatch, [output_notice(D)], _result(S.REPAIR_STATUS_REPAIRED, OTHER)))
    assert [(c["digest"], c["cancelled"]) for c in evaluator.calls] == [(D.sha256, True), (OTHER.sha256, False)]
    assert outcome.metrics["acc_after"] == 80.0
    assert not scheduler._early


def test_an_early_evaluation_is_dropped_when_the_service_finds_the_output_corrupted(monkeypatch):
    outcome, evaluator, early, scheduler = asyncio.run(
        _attempt(monkeypatch, [output_notice(D)], _result(S.REPAIR_STATUS_CORRUPTED_OUTPUT)))
    assert len(early) == 1
    assert [(c["digest"], c["cancelled"], c["done"]) for c in evaluator.calls] == [(D.sha256, True, False)]
    assert outcome.status == "CORRUPTED_OUTPUT" and outcome.metrics == {}
    assert not scheduler._early


def test_only_the_first_notice_starts_an_evaluation_and_other_lines_none(monkeypatch):
    lines = ["epoch 1: valid acc 0.9", output_notice(D), output_notice(OTHER), "sha256:" + "c" * 64]
    outcome, evaluator, early, _ = asyncio.run(
        _attempt(monkeypatch, lines, _result(S.REPAIR_STATUS_REPAIRED, D)))
    assert [c["digest"] for c in early] == [D.sha256]
    assert [c["digest"] for c in evaluator.calls] == [D.sha256]
    assert outcome.metrics["acc_after"] == 90.0


def test_switched_off_the_evaluation_waits_for_the_result(monkeypatch):
    outcome, evaluator, early, _ = asyncio.run(
        _attempt(monkeypatch, [output_notice(D)], _result(S.REPAIR_STATUS_REPAIRED, D), early_evaluation=False))
    assert early == [] and [c["digest"] for c in evaluator.calls] == [D.sha256]
    assert outcome.metrics["acc_after"] == 90.0 and outcome.result["evaluate_overlap_seconds"] == 0.0
