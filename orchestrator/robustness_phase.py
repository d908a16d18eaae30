"""Robustness across all compared models (You et al.): PGD on test inputs that *every* model
of the study classifies correctly, so that ΔASR compares like with like.

When a study asks for `robustness`, phase 1 (the scheduler's per-job evaluation) runs
without it and records, per job, which test inputs the original and the repaired model get
right. Once every job of a fault is done, phase 2 intersects those sets over the original
and all the fault's scored repaired models, draws up to `settings.robustness.samples` of
them (default 500) with the study's smallest seed, stores that common set in the ledger
file, and asks the evaluator for the robustness of each job's repaired model (and the
original) on exactly those inputs (`settings.robustness.indices`).

Durable and resumable like phase 1: the set and each job's phase-2 result are ledger rows
(`robustness_sets`, `robustness_jobs`); a kill at any moment leaves each row whole or absent;
a resumed run reuses the stored set and evaluates only the rows not done. If the study
gains jobs (a new approach or seed), the set is recomputed and the rows made on the old set
are evaluated again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from fixbench.faults.bundle import Fault
from fixbench.statuses import SCORED
from fixbench.v1 import evaluator_pb2
from fixbench.v1.common_pb2 import Digest
from orchestrator.evaluator_client import EvaluationRefused, EvaluatorClient, InfraFailure
from orchestrator.jobs import Job
from orchestrator.ledger import Ledger
from orchestrator.scheduler import Scheduler
from orchestrator.spec import EvaluationSpec, StudySpec
from orchestrator.study_tables import StudyTables

log = logging.getLogger("fixbench.robustness")
E = evaluator_pb2.EvaluationStatus
ROBUSTNESS = "robustness"
DEFAULT_SAMPLES = 500
# Jobs whose evaluation scored a model; the others have no repaired model to attack.
# What phase 2 keeps of the evaluator's metrics (parity and attack bookkeeping included).
KEPT_PREFIXES = ("asr_", "dasr", "robustness_", "eps", "parity_")


class RobustnessPhaseError(RuntimeError):
    """The phase cannot run as asked; the message names the setting or the job."""


def wants_phase(spec: StudySpec) -> bool:
    """True when the study asks for robustness, which then runs as phase 2."""
    return ROBUSTNESS in [p.strip().lower() for p in spec.evaluation.properties]


def phase_one_spec(spec: StudySpec) -> StudySpec:
    """The spec the scheduler evaluates with: robustness left out (phase 2 does it on the
    common inputs) and accuracy kept (its details say which inputs each model gets right).
    Job keys still come from the full spec, so they do not change."""
    if not wants_phase(spec):
        return spec
    props = [p for p in spec.evaluation.properties if p.strip().lower() != ROBUSTNESS]
    if "accuracy" not in [p.strip().lower() for p in props]:
        props.insert(0, "accuracy")
    settings = dict(spec.evaluation.settings)
    if "indices" in dict(settings.get(ROBUSTNESS) or {}):
        raise RobustnessPhaseError("evaluation.settings.robustness.indices is chosen by the study (the inputs every "
                                   "model classifies correctly); remove it from the spec")
    return spec.model_copy(update={"evaluation": EvaluationSpec(properties=props, settings=settings)})


class DetailRecordingScheduler(Scheduler):
    """The scheduler, recording each evaluation's correct-input sets and the evaluated
    model's digest before the job is marked done (the ledger finish comes after
    `_evaluate` returns), so every done job has what phase 2 needs."""

    def __init__(self, *args, tables: StudyTables, **kwargs):
        super().__init__(*args, **kwargs)
        self.tables = tables

    async def _evaluate(self, job: Job, repaired) -> evaluator_pb2.EvaluationResult:
        result = await super()._evaluate(job, repaired)
        details = json.loads(result.details_json or "{}")
        self.tables.record_details(job.key, repaired.sha256, repaired.size_bytes, details.get("correct_before"),
                                   details.get("correct_after"))
        return result


def common_indices(correct_sets: Iterable[Sequence[int]], n: int, seed: int) -> tuple[list[int], int]:
    """Up to `n` sorted indices that are in every set, drawn without replacement with
    `seed`; also returns how many qualified."""
    if n < 1:
        raise RobustnessPhaseError(f"evaluation.settings.robustness.samples must be ≥ 1, got {n}")
    common: set[int] | None = None
    for s in correct_sets:
        common = set(s) if common is None else common & set(s)
    if common is None:
        raise RobustnessPhaseError("common_indices needs at least one model's correct inputs")
    candidates = np.array(sorted(common), dtype=np.int64)
    if len(candidates) <= n:
        return candidates.tolist(), len(candidates)
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(candidates, size=n, replace=False).tolist()), len(candidates)


def _sha(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@dataclass
class PhaseJob:
    key: str
    fault: Fault
    seed: int
    repaired: Digest
    indices_sha: str


@dataclass
class PhaseReport:
    """What one pass of phase 2 did (for the console and the tests)."""

    evaluated: int = 0
    already_done: int = 0
    waiting_faults: list[str] | None = None
    left_pending: int = 0


class RobustnessPhase:
    """Phase 2 over the faults of one study (see the module doc)."""

    def __init__(self, spec: StudySpec, ledger: Ledger, tables: StudyTables, evaluator_address: str,
                 on_done: Callable[[str, str], None] | None = None):
        self.spec = spec
        self.ledger = ledger
        self.tables = tables
        self.evaluator_address = evaluator_address
        self.on_done = on_done or (lambda key, message: None)
        rc = dict(spec.evaluation.settings.get(ROBUSTNESS) or {})
        self.samples = int(rc.get("samples", DEFAULT_SAMPLES))
        # One documented choice for the whole study: its smallest seed.
        self.selection_seed = min(spec.seeds)

    def plan(self, faults: Sequence[Fault], keys_by_fault: dict[str, list[str]]) -> tuple[list[PhaseJob], PhaseReport]:
        """Fixes (or reuses) each ready fault's common set and lists the jobs to attack."""
        report = PhaseReport(waiting_faults=[])
        rows = {r["key"]: r for r in self.ledger.rows(self.spec.name)}
        todo: list[PhaseJob] = []
        for fault in faults:
            keys = keys_by_fault.get(fault.id, [])
            fault_rows = [rows[k] for k in keys if k in rows]
            if len(fault_rows) < len(keys) or any(r["state"] != "done" for r in fault_rows):
                report.waiting_faults.append(fault.id)  # type: ignore[union-attr]
                continue
            members = []
            for row in sorted(fault_rows, key=lambda r: r["key"]):
                if row["status"] not in SCORED:
                    continue
                details = self.tables.details(row["key"])
                if details is None or details["correct_after"] is None or details["correct_before"] is None:
                    log.warning("job %s has no recorded correct inputs (evaluated before the robustness phase "
                                "existed?); it gets no robustness result", row["key"][:12])
                    continue
                members.append((row, details))
            if not members:
                continue
            members_sha = _sha({"keys": [r["key"] for r, _ in members], "samples": self.samples,
                                "seed": self.selection_seed})
            stored = self.tables.robustness_set(self.spec.name, fault.id)
            if stored is None or stored["members_sha"] != members_sha:
                sets = [members[0][1]["correct_before"]] + [d["correct_after"] for _, d in members]
                indices, candidates = common_indices(sets, self.samples, self.selection_seed)
                self.tables.save_robustness_set(self.spec.name, fault.id, members_sha, indices, _sha(indices),
                                                candidates)
                stored = self.tables.robustness_set(self.spec.name, fault.id)
            assert stored is not None
            for row, details in members:
                self.tables.add_robustness_job(row["key"], self.spec.name, fault.id, stored["indices_sha"])
                if self.tables.robustness_state(row["key"]) == "done":
                    report.already_done += 1
                    continue
                todo.append(PhaseJob(row["key"], fault, int(row["seed"]),
                                     Digest(sha256=details["repaired_sha256"], size_bytes=details["repaired_size"]),
                                     stored["indices_sha"]))
        return todo, report

    async def run(self, faults: Sequence[Fault], keys_by_fault: dict[str, list[str]]) -> PhaseReport:
        """Evaluates every planned job; infrastructure errors are retried with the study's
        backoff, and a job still failing is left pending for the next run."""
        todo, report = self.plan(faults, keys_by_fault)
        if not todo:
            return report
        indices = {f.id: s["indices"] for f in faults if (s := self.tables.robustness_set(self.spec.name, f.id))}
        client = EvaluatorClient(self.evaluator_address)  # TLS and the token as in phase 1
        limit = asyncio.Semaphore(self.spec.concurrency.total)

        async def one(job: PhaseJob) -> None:
            async with limit:
                if await self._run_one(client, job, indices[job.fault.id]):
                    report.evaluated += 1
                else:
                    report.left_pending += 1

        try:
            await asyncio.gather(*(one(j) for j in todo))
        finally:
            await client.close()
        return report

    async def _run_one(self, client: EvaluatorClient, job: PhaseJob, indices: list[int]) -> bool:
        retry = self.spec.retry
        for attempt in range(1, retry.attempts + 1):
            self.tables.start_robustness_job(job.key)
            try:
                result = await self._evaluate(client, job, indices)
            except InfraFailure as exc:
                self.tables.note_robustness_job(job.key, f"infrastructure error: {exc}")
                log.warning("robustness of %s attempt %d: %s", job.key[:12], attempt, exc)
                if attempt < retry.attempts:
                    await asyncio.sleep(retry.backoff_seconds * 2 ** (attempt - 1))
                continue
            except EvaluationRefused as exc:
                # A bad request for this one job: say so and leave it pending; the rest go on.
                self.tables.note_robustness_job(job.key, str(exc))
                log.error("%s", exc)
                return False
            metrics = {k: v for k, v in result.metrics.items() if k.startswith(KEPT_PREFIXES)}
            message = result.notes.get(ROBUSTNESS, "") or (
                f"PGD on the {len(indices)} test inputs every model of the study classifies correctly")
            if result.status == E.EVALUATION_STATUS_CORRUPTED_OUTPUT:
                metrics, message = {}, f"corrupted output in the robustness phase: {result.message}"
            if self.tables.finish_robustness_job(job.key, job.indices_sha, metrics, message):
                self.on_done(job.key, message)
            return True
        return False

    async def _evaluate(self, client: EvaluatorClient, job: PhaseJob, indices: list[int]) -> evaluator_pb2.EvaluationResult:
        section = {**dict(self.spec.evaluation.settings.get(ROBUSTNESS) or {}), "indices": indices}
        return await client.evaluate(job.key, job.fault, job.repaired, job.seed, [ROBUSTNESS],
                                     {**self.spec.evaluation.settings, ROBUSTNESS: section}, timeout=3600,
                                     what="Evaluate (robustness)")
