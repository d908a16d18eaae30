"""Asyncio fan-out of jobs over gRPC: per-replica concurrency slots, Check before Fix,
deadlines, infrastructure-error retries with backoff, and one ledger write per outcome."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fixbench.grpcutil import aio_channel
from fixbench.sdk.budget import DEFAULT_BUDGET_SECONDS, BudgetError, budget_seconds
from fixbench.sdk.server import parse_output_notice
from fixbench.v1 import evaluator_pb2, repair_pb2, repair_pb2_grpc
from fixbench.v1.common_pb2 import Digest
from orchestrator.evaluator_client import EvaluationRefused, EvaluatorClient, InfraFailure
from orchestrator.job_logs import JobLogs
from orchestrator.jobs import Job
from orchestrator.ledger import Ledger
from orchestrator.spec import StudySpec
from orchestrator.total_slots import TotalSlots

log = logging.getLogger("fixbench.orchestrator")
S = repair_pb2.RepairStatus
E = evaluator_pb2.EvaluationStatus

# Codes that mean "the infrastructure failed, not the approach": retried, never a result.
# UNKNOWN is not among them: gRPC answers it for an exception the service did not catch,
# which is the approach's TOOL_ERROR (retrying would only repeat it).
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
             grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
# How long a failed replica's slot waits for the replica to answer health again.
REPLICA_RECOVERY_SECONDS = 120.0
# Extra seconds beyond a job's budget before the orchestrator gives up on the stream.
STREAM_MARGIN_SECONDS = 120.0


@dataclass
class Outcome:
    status: str
    message: str
    result: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


ProgressFn = Callable[[Job, float, str], None]


class Scheduler:
    def __init__(self, spec: StudySpec, ledger: Ledger, approach_addresses: dict[str, list[str]],
                 evaluator_address: str, on_progress: ProgressFn | None = None,
                 on_done: Callable[[Job, Outcome], None] | None = None,
                 log_tail: Callable[[str], str] | None = None,
                 exit_cause: Callable[[str, float], tuple[str, str] | None] | None = None):
        self.spec = spec
        self.ledger = ledger
        self.approach_addresses = approach_addresses
        self.evaluator_address = evaluator_address
        self.on_progress = on_progress or (lambda job, fraction, stage: None)
        self.on_done = on_done or (lambda job, outcome: None)
        self.log_tail = log_tail or (lambda address: "")
        # The runtime's verdict on a service that died under its resource limits (OOM, CPU).
        self.exit_cause = exit_cause or (lambda address, since: None)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.evaluator = EvaluatorClient(evaluator_address)
        # results/<study>/jobs/: every attempt and the approach's streamed log lines
        self.job_logs = JobLogs(ledger.path.parent)
        # job key -> (digest, task, span): an Evaluate started on the SDK's upload notice while
        # the service still checks its output (see _fix); used only if the result names that
        # digest. span: [monotonic start, end] of the call, filled in as it runs.
        self._early: dict[str, tuple[Digest, asyncio.Task, list[float]]] = {}
        # job key -> [start, end] of the Evaluate call whose result the job used.
        self._evaluate_spans: dict[str, list[float]] = {}
        # FIXBENCH_EARLY_EVALUATION=0: evaluate only after the result, as before (what
        # bench_overhead compares against; also a way to keep the evaluator off the cores
        # while a service still checks its output).
        self.early_evaluation = os.environ.get("FIXBENCH_EARLY_EVALUATION", "1") != "0"

    def _channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            # round_robin spreads calls over every replica a DNS name resolves to (compose --scale).
            # TLS and the bearer token come from the environment (FIXBENCH_TLS_*, FIXBENCH_TOKEN).
            self._channels[address] = aio_channel(address, [("grpc.lb_policy_name", "round_robin")])
        return self._channels[address]

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
        await self.evaluator.close()

    async def describe(self, approach: str) -> repair_pb2.DescribeResponse:
        stub = repair_pb2_grpc.RepairStub(self._channel(self.approach_addresses[approach][0]))
        return await stub.Describe(repair_pb2.DescribeRequest(), timeout=30)

    async def run(self, jobs: list[Job]) -> None:
        slots: dict[str, asyncio.Queue] = {}
        for a in self.spec.approaches:
            q: asyncio.Queue = asyncio.Queue()
            for _ in range(a.concurrency):
                for address in self.approach_addresses.get(a.name, []):  # none: could not start
                    q.put_nowait(address)
            slots[a.name] = q
        # A job waits for its approach's replica slot first and takes one of the `total`
        # slots only to run: holding a total slot while queueing for a busy approach would
        # starve the other approaches. A freed total slot goes to the approach with the most
        # work left (orchestrator/total_slots.py), so a slow approach's chain starts early.
        self._total = TotalSlots(self.spec.concurrency.total, ((j.approach.name, j.fault.id) for j in jobs))
        self._seed_job_lengths()
        self._recovering: set[asyncio.Task] = set()
        renewing = asyncio.create_task(self._renew_claims())
        try:
            await asyncio.gather(*(self._run_job(j, slots[j.approach.name]) for j in jobs))
        finally:
            renewing.cancel()
            for task in self._recovering:
                task.cancel()
            await self.close()

    def _seed_job_lengths(self) -> None:
        """Job lengths this ledger already holds (a resumed or repeated study) rank the
        approaches from the start instead of after each one's first job on each fault."""
        names = {a.name for a in self.spec.approaches}
        for row in self.ledger.rows():
            if row.get("state") != "done" or row.get("approach") not in names:
                continue
            try:
                seconds = json.loads(row.get("result_json") or "{}").get("job_seconds")
            except ValueError:
                continue
            if isinstance(seconds, int | float):
                self._total.record(row["approach"], row["fault_id"], float(seconds), row.get("status") or "")

    async def _claim(self, job: Job) -> str | None:
        """Claims the job in the ledger; while another orchestrator's claim is live (renewed
        within its lease), waits for it to finish or lapse. None: claimed; else "done already"."""
        warned = False
        while True:
            holder = self.ledger.claim(job.key)
            if holder is None or holder == "done already":
                return holder
            if not warned:
                log.warning("job %s is claimed by %s; waiting until it is done or its claim lapses", job.key[:12], holder)
                warned = True
            await asyncio.sleep(max(self.ledger.lease_seconds / 4, 0.05))

    async def _renew_claims(self) -> None:
        """Keeps this run's claims live (a claim not renewed within the lease may be taken over)."""
        while True:
            await asyncio.sleep(max(self.ledger.lease_seconds / 4, 0.05))
            self.ledger.renew_claims()

    async def _return_when_healthy(self, address: str, slots: asyncio.Queue) -> None:
        stub = health_pb2_grpc.HealthStub(self._channel(address))
        deadline = time.monotonic() + REPLICA_RECOVERY_SECONDS
        while time.monotonic() < deadline:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.5)
        slots.put_nowait(address)  # healthy again, or given up waiting: let a retry find out

    async def _run_job(self, job: Job, slots: asyncio.Queue) -> None:
        retry = self.spec.retry
        for attempt in range(1, retry.attempts + 1):
            address = await slots.get()
            attempt_started = time.monotonic()
            try:
                await self._total.acquire(job.approach.name, job.fault.id)
                try:
                    holder = await self._claim(job)
                    if holder is not None:
                        # Another orchestrator on this ledger finished it meanwhile.
                        slots.put_nowait(address)
                        self.on_done(job, Outcome("CLAIMED", f"done by another orchestrator ({holder})"))
                        return
                    self.job_logs.attempt(job.key, attempt, address)
                    attempt_started = time.monotonic()
                    outcome = await self._attempt(job, address)
                    self._total.record(job.approach.name, job.fault.id, time.monotonic() - attempt_started,
                                       outcome.status)
                finally:
                    self._total.release(job.approach.name)
            except InfraFailure as exc:
                cause = await asyncio.to_thread(self.exit_cause, address, attempt_started)
                if cause is not None:
                    # Killed by its own limits: the approach's outcome, which a retry would repeat.
                    slots.put_nowait(address)
                    status, message = cause
                    self.job_logs.outcome(job.key, attempt, address, status, message)
                    if self.ledger.finish(job.key, status, message, {"status": status}, {}):
                        self.on_done(job, Outcome(status, message, {"status": status}))
                    return
                detail = str(exc)
                tail = self.log_tail(address)
                if tail:
                    detail += f"\n--- last log lines of {address} ---\n{tail}"
                self.ledger.infra_error(job.key, detail)
                self.job_logs.outcome(job.key, attempt, address, "INFRA_ERROR", detail)
                log.warning("job %s attempt %d: infrastructure error: %s", job.key[:12], attempt, detail)
                # The slot comes back only once its replica answers health again, so the retry
                # takes a healthy replica (or waits for this one) instead of burning attempts.
                self._recovering.add(asyncio.create_task(self._return_when_healthy(address, slots)))
                self._total.requeue(job.approach.name, job.fault.id)
                if attempt < retry.attempts:
                    await asyncio.sleep(retry.backoff_seconds * 2 ** (attempt - 1))
                continue
            except asyncio.CancelledError:
                self.ledger.release(job.key, "cancelled (Ctrl-C); resumable", "CANCELLED")
                self.job_logs.outcome(job.key, attempt, address, "CANCELLED", "cancelled (Ctrl-C); resumable")
                slots.put_nowait(address)
                raise
            except EvaluationRefused as exc:
                # Neither the approach's outcome nor a passing fault: the job stays pending with
                # the evaluator's reason, and the rest of the study goes on.
                slots.put_nowait(address)
                log.error("%s", exc)
                # FAULT_ERROR (a FaultError): the fault's own model fails in the evaluator.
                status = getattr(exc, "status", "EVALUATION_REFUSED")
                self.ledger.release(job.key, str(exc), status)
                self.job_logs.outcome(job.key, attempt, address, status, str(exc))
                self.on_done(job, Outcome(status, str(exc)))
                return
            slots.put_nowait(address)
            self.job_logs.outcome(job.key, attempt, address, outcome.status, outcome.message)
            if self.ledger.finish(job.key, outcome.status, outcome.message, outcome.result, outcome.metrics):
                self.on_done(job, outcome)
            return
        self.ledger.release(job.key, f"infrastructure errors in all {retry.attempts} attempts; re-run the study to resume",
                            "INFRA_ERROR")
        self.on_done(job, Outcome("INFRA_ERROR", "gave up for this run"))

    async def _attempt(self, job: Job, address: str) -> Outcome:
        stub = repair_pb2_grpc.RepairStub(self._channel(address))
        started = time.monotonic()
        try:
            check = await stub.Check(repair_pb2.CheckRequest(job=job.message), timeout=300)
        except grpc.aio.AioRpcError as exc:
            return self._rpc_failure("Check", exc, address)
        if not check.adaptable:
            return Outcome("UNADAPTABLE", check.reason, {"job_seconds": time.monotonic() - started})
        try:
            return await self._attempt_after_check(stub, job, address, started)
        finally:
            self._discard_early(job.key)  # a result that named another digest, or none
            self._evaluate_spans.pop(job.key, None)

    async def _attempt_after_check(self, stub, job: Job, address: str, started: float) -> Outcome:
        result = await self._fix(stub, job, address)
        status = S.Name(result.status).removeprefix("REPAIR_STATUS_")
        summary = {
            "status": status,
            "repaired_sha256": result.repaired_model.sha256,
            # noop hands the faulty model back; a search that found nothing hands back none.
            "model_changed": bool(result.repaired_model.sha256) and result.repaired_model.sha256 != job.message.model.sha256,
            "repair_seconds": result.timings.repair_seconds,
            "service_seconds": result.timings.total_seconds,
            "setup_seconds": result.timings.setup_seconds,
            "output_seconds": result.timings.output_seconds,
            "approach_metrics": dict(result.metrics),
            "diagnosis": json_format.MessageToDict(result.diagnosis),
        }
        if status == "INFRA_ERROR":
            raise InfraFailure(f"{address} reported an infrastructure error: {result.message}")
        metrics, message = {}, result.message
        fix_done = time.monotonic()
        summary["fix_call_seconds"] = fix_done - started
        if status in ("REPAIRED", "NOT_REPAIRED"):
            evaluation = await self._evaluate(job, result.repaired_model)
            metrics = dict(evaluation.metrics)
            if evaluation.status == E.EVALUATION_STATUS_CORRUPTED_OUTPUT:
                status, message = "CORRUPTED_OUTPUT", evaluation.message
            span = self._evaluate_spans.pop(job.key, None)
            if span is not None and len(span) == 2:
                # Where the time goes (bench_overhead): the Evaluate call's own length, and how
                # much of it ran while the service was still checking its output.
                summary["evaluate_seconds"] = span[1] - span[0]
                summary["evaluate_overlap_seconds"] = max(0.0, min(fix_done, span[1]) - span[0])
        summary["job_seconds"] = time.monotonic() - started
        summary["status"] = status
        return Outcome(status, message, summary, metrics)

    def _rpc_failure(self, what: str, exc: grpc.aio.AioRpcError, address: str) -> Outcome:
        if exc.code() in RETRYABLE or exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and what == "Check":
            raise InfraFailure(f"{what} on {address}: {exc.code().name}: {exc.details()}")
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return Outcome("TIMEOUT", f"{what} on {address} exceeded its deadline")
        if exc.code() == grpc.StatusCode.UNKNOWN:
            return Outcome("TOOL_ERROR", f"uncaught error in {address} during {what}: {exc.details()}")
        return Outcome("TOOL_ERROR", f"{address} rejected the job in {what}: {exc.code().name}: {exc.details()}")

    async def _fix(self, stub, job: Job, address: str) -> repair_pb2.RepairResult:
        """Streams one Fix call. A service runs one repair at a time and queues the others, and
        a job's budget starts when its repair does (the SDK's "started" event): so the deadline
        here is budget + margin from that event. A job the service reports "queued" waits for
        the repairs ahead of it on the replica, each at most budget + margin; one never started
        within that is an infrastructure failure (retried), never the approach's TIMEOUT. A
        stream that stays silent from the start is the repair hanging: TIMEOUT after budget +
        margin, as before."""
        try:
            budget = budget_seconds(job.message)
        except BudgetError:
            budget = DEFAULT_BUDGET_SECONDS
        per_job = budget + STREAM_MARGIN_SECONDS
        ahead = max(1, getattr(getattr(job, "approach", None), "concurrency", 1))
        # Until the service says "queued" (the SDK does when the job must wait its turn), a
        # silent stream counts as the repair itself: a service that hangs is a TIMEOUT.
        deadline, started, queued = time.monotonic() + per_job, False, False
        call = stub.Fix(repair_pb2.FixRequest(job=job.message))
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns a read that
                    # completes as the task is cancelled and drops the cancellation, so a Ctrl-C
                    # during a busy progress stream was lost and the study ran on to the end.
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        event = await call.read()
                except TimeoutError:
                    if started or not queued:
                        return repair_pb2.RepairResult(status=S.REPAIR_STATUS_TIMEOUT,
                                                       message=f"Fix on {address} exceeded its deadline "
                                                               f"({per_job:.0f} s from the repair's start)")
                    raise InfraFailure(f"the job did not start on {address} within {per_job * ahead:.0f} s "
                                       f"(queued behind {ahead - 1} other job(s))") from None
                if event is grpc.aio.EOF:
                    break
                if event is None:  # grpc.aio yields None for bytes that are not a FixResponse
                    raise InfraFailure(f"the Fix stream from {address} sent a message that is not a FixResponse")
                kind = event.WhichOneof("event")
                if kind == "progress":
                    if event.progress.stage == "queued" and not started:
                        queued, deadline = True, time.monotonic() + per_job * ahead
                    if event.progress.stage == "started" and not started:
                        started = True
                        cap = event.progress.metrics.get("budget_seconds", 0.0)
                        per_job = (cap if cap > 0 else budget) + STREAM_MARGIN_SECONDS
                        deadline = time.monotonic() + per_job
                    self.on_progress(job, event.progress.fraction, event.progress.stage)
                elif kind == "log":
                    self.job_logs.line(job.key, event.log)
                    self._maybe_evaluate_early(job, event.log)
                elif kind == "result":
                    return event.result
        except grpc.aio.AioRpcError as exc:
            outcome = self._rpc_failure("Fix", exc, address)
            return repair_pb2.RepairResult(status=S.Value(f"REPAIR_STATUS_{outcome.status}"), message=outcome.message)
        finally:
            call.cancel()
        raise InfraFailure(f"the Fix stream from {address} ended without a result (service died?)")

    def _maybe_evaluate_early(self, job: Job, line: str) -> None:
        """On the SDK's upload notice (fixbench.sdk.server.output_notice), starts the job's
        Evaluate of that digest at once: the service's own check of the model on the repair
        split and the evaluator's scoring of the test split then run side by side instead of
        one after the other (each is most of a small model's per-job overhead). It runs inside
        the job's slot, so concurrency accounting is unchanged; only the first notice of an
        attempt counts (an approach that prints fake ones gets no more evaluations started)."""
        notice = parse_output_notice(line) if self.early_evaluation else None
        if notice is None or job.key in self._early:
            return
        digest, span = Digest(sha256=notice[0], size_bytes=notice[1]), []
        self._early[job.key] = (digest, asyncio.create_task(self._request_evaluation(job, digest, span)), span)

    def _discard_early(self, key: str) -> None:
        early = self._early.pop(key, None)
        if early is not None:
            early[1].cancel()
            # Retrieve its outcome so that a failure of an evaluation nobody wants is not logged.
            early[1].add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _evaluate(self, job: Job, repaired) -> evaluator_pb2.EvaluationResult:
        """The evaluation of `repaired`: the one started early on the service's upload notice
        when it names the same digest (its failures count exactly as a fresh call's), else a
        fresh Evaluate."""
        early = self._early.get(job.key)
        if early is not None and early[0].sha256 == repaired.sha256 and early[0].size_bytes == repaired.size_bytes:
            del self._early[job.key]
            self._evaluate_spans[job.key] = early[2]
            return await early[1]
        self._discard_early(job.key)
        span: list[float] = []
        self._evaluate_spans[job.key] = span
        return await self._request_evaluation(job, repaired, span)

    async def _request_evaluation(self, job: Job, repaired, span: list[float]) -> evaluator_pb2.EvaluationResult:
        span.append(time.monotonic())
        result = await self.evaluator.evaluate(job.key, job.fault, repaired, job.seed,
                                               list(self.spec.evaluation.properties),
                                               dict(self.spec.evaluation.settings), timeout=1800)
        span.append(time.monotonic())
        return result
