"""The checks: does a running Repair service keep the contract of proto/fixbench/v1/repair.proto?

Every check talks to the service through gRPC only, so the suite applies to any approach,
built with the SDK or not. Store-dependent checks need the store the service reads from:
the fixture is uploaded there and the repaired models are downloaded from there."""

from __future__ import annotations

import hashlib
import json
import keyword
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fixbench.arrays import load_split
from fixbench.artifacts.client import ArtifactClient, ArtifactError
from fixbench.artifacts.digest import make_digest
from fixbench.conformance.fixture import Fixture, build_fixture, dataset_ref
from fixbench.conformance.report import CheckResult, Report
from fixbench.grpcutil import channel, service_name
from fixbench.onnxio import InvalidModelError, Predictor, load_model
from fixbench.onnxio.validate import signature
from fixbench.v1 import repair_pb2, repair_pb2_grpc

S = repair_pb2.RepairStatus
REPAIR_SERVICE = service_name("Repair")
FAULT_FAMILY = "misclassification"
KNOWN_FAULT_FAMILIES = ("misclassification", "training_recipe")
PARAM_TYPES = ("int", "float", "str", "bool")
# Statuses an approach may end a valid fixture job in; the others say it crashed or broke.
ACCEPTABLE_ON_FIXTURE = (S.REPAIR_STATUS_REPAIRED, S.REPAIR_STATUS_NOT_REPAIRED, S.REPAIR_STATUS_TIMEOUT)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_NEED_FIELDS = {
    repair_pb2.NEED_TRAINING_DATA: "training data",
    repair_pb2.NEED_VALIDATION_DATA: "validation data",
    repair_pb2.NEED_REPAIR_DATA: "repair data",
    repair_pb2.NEED_TRAINING_RECIPE: "training recipe",
    repair_pb2.NEED_SENSITIVE_ATTRIBUTE: "sensitive attribute",
}
# Codes by which a service says it cannot read an input from its store.
_FETCH_FAILURE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


class SuiteUsageError(ValueError):
    """The suite was asked for something the service cannot be judged by (e.g. parameters it
    does not declare): the caller's mistake, not a breach of the contract."""


class _Failed(Exception):
    """A check's verdict: the service broke the contract (the message says how)."""


class _Skipped(Exception):
    """A check that cannot say anything about this service (the message says why)."""


@dataclass(frozen=True)
class SuiteSettings:
    """Knobs of one run. `budget` is the wall budget of the full Fix runs, `grace` how far
    past a budget a result may come, `rpc_timeout` the deadline of the unary calls.
    `max_trials` (0: none) caps a search approach's trials (Budget.max_trials): an anytime
    search otherwise spends the whole wall budget on every full Fix run."""

    budget: float = 60.0
    max_trials: int = 0
    tiny_budget: float = 0.2
    grace: float = 15.0
    rpc_timeout: float = 30.0
    seed: int = 0
    cancel_settle: float = 1.0


def _status(value: int) -> str:
    return S.Name(value).removeprefix("REPAIR_STATUS_") if value in S.values() else str(value)


def _code(exc: grpc.RpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


def _fixture_recipe() -> repair_pb2.TrainingRecipe:
    """A training recipe of the fixture network's shape (the zoo's mlp with one hidden layer of
    2F units). The fixture was built by hand, not trained by it: the recipe is there so that a
    recipe-level approach can run on the fixture at all."""
    return repair_pb2.TrainingRecipe(
        architecture="mlp", loss="categorical_crossentropy", optimizer="adam", learning_rate=0.01, batch_size=32,
        epochs=5, activation="relu", last_activation="softmax", initializer="glorot_uniform", regularizer="none",
        hidden_units=[8], width_multiplier=1.0,
    )


class ConformanceSuite:
    """Runs every check against `address`, uploading the fixture to `store_address`.

    `params` are passed to the approach in every Fix (e.g. a smaller search to keep the run
    short; SuiteUsageError when the service does not declare one). `run_id` makes this run's
    job ids unique, so that a long-running service's recorded results from an earlier run
    are not mistaken for this run's."""

    # The checks that send jobs, in order (some use what an earlier one found).
    JOB_CHECKS: tuple[tuple[str, str], ...] = (
        ("check-valid", "check_valid_job"),
        ("parameters-accepted", "check_parameters_accepted"),
        ("check-missing-need", "check_missing_need"),
        ("fix-stream", "check_fix_stream"),
        ("idempotency", "check_idempotency"),
        ("fix-missing-need", "check_fix_missing_need"),
        ("cancellation", "check_cancellation"),
        ("cancelled-job-reruns", "check_cancelled_job_reruns"),
        ("budget", "check_budget"),
        ("bad-model", "check_bad_model"),
        ("unknown-parameter", "check_unknown_parameter"),
        ("unknown-digest", "check_unknown_digest"),
    )

    def __init__(self, address: str, store_address: str, params: dict[str, Any] | None = None,
                 settings: SuiteSettings | None = None, run_id: str | None = None, suite_owned_store: bool = False):
        self.address = address
        self.store_address = store_address
        self.params = dict(params or {})
        self.settings = settings or SuiteSettings()
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.suite_owned_store = suite_owned_store
        self.report = Report(address=address, store_address=store_address)
        self.info: repair_pb2.DescribeResponse | None = None
        self.fixture: Fixture = build_fixture(self.settings.seed)
        self.digests: dict[str, Any] = {}
        self.adaptable: bool | None = None
        self.store_problem = ""
        self.fix_result: repair_pb2.RepairResult | None = None
        self._cancelled_mid_stream = False

    # ---- plumbing -------------------------------------------------------------------------
    def run(self) -> Report:
        with tempfile.TemporaryDirectory(prefix="fixbench-conformance-") as tmp, channel(self.address) as ch:
            self.stub = repair_pb2_grpc.RepairStub(ch)
            self.health = health_pb2_grpc.HealthStub(ch)
            self.reflection = reflection_pb2_grpc.ServerReflectionStub(ch)
            self.store = ArtifactClient(self.store_address, Path(tmp) / "cache", timeout=self.settings.rpc_timeout)
            try:
                self._run_checks()
            finally:
                self.store.close()
        return self.report

    def _run_checks(self) -> None:
        self._check("health", self.check_health)
        self._check("reflection", self.check_reflection)
        self._check("describe", self.check_describe)
        if self.info is None:
            self._skip_rest("Describe did not answer")
            return
        unknown = sorted(set(self.params) - {p.name for p in self.info.parameters})
        if unknown:
            # Every Fix would fail INVALID_ARGUMENT, blaming the service for the caller's typo.
            raise SuiteUsageError(f"parameter(s) {', '.join(unknown)} given to the suite are not declared by "
                                  f"{self.info.name}; it declares: {', '.join(p.name for p in self.info.parameters) or 'none'}")
        self._check("upload-fixture", self.upload_fixture)
        if not self.digests:
            self._skip_rest(f"the fixture could not be uploaded to the store at {self.store_address}")
            return
        for name, method in self.JOB_CHECKS:
            if self.store_problem:
                self.report.checks.append(CheckResult(name, "skip", self.store_problem))
            else:
                self._check(name, getattr(self, method))

    def _check(self, name: str, fn: Callable[[], str]) -> None:
        start = time.monotonic()
        try:
            status, detail = "pass", fn()
        except _Failed as exc:
            status, detail = "fail", str(exc)
        except _Skipped as exc:
            status, detail = "skip", str(exc)
        except grpc.RpcError as exc:
            status, detail = "fail", f"unexpected gRPC error {_code(exc)}"
        except Exception as exc:  # a check must report, never crash the suite
            status, detail = "fail", f"{type(exc).__name__}: {exc}"
        self.report.checks.append(CheckResult(name, status, detail, time.monotonic() - start))

    def _skip_rest(self, why: str) -> None:
        self.report.checks += [CheckResult(name, "skip", why) for name, _ in self.JOB_CHECKS]

    def _needs(self) -> list[int]:
        assert self.info is not None
        return list(self.info.needs)

    def _families(self) -> list[str]:
        assert self.info is not None
        return list(getattr(self.info, "fault_families", []) or [])

    def _job(self, job_id: str = "", params: dict[str, Any] | None = None, budget: float | None = None,
             drop_need: int | None = None, model=None, replace_splits: dict | None = None) -> repair_pb2.RepairJob:
        """The fixture job: every input the approach might need, minus `drop_need`, with the
        digests of `replace_splits` in place of the fixture's."""
        splits = {k: v for k, v in self.digests.items() if k in ("train", "valid", "repair")}
        if drop_need == repair_pb2.NEED_TRAINING_DATA:
            splits.pop("train")
        elif drop_need == repair_pb2.NEED_VALIDATION_DATA:
            splits.pop("valid")
        elif drop_need == repair_pb2.NEED_REPAIR_DATA:
            splits.pop("repair")
        splits.update(replace_splits or {})
        p = struct_pb2.Struct()
        p.update(self.params if params is None else params)
        families = self._families()
        job = repair_pb2.RepairJob(
            job_id=job_id, fault_id="conformance-blobs-mlp",
            fault_family=FAULT_FAMILY if not families or FAULT_FAMILY in families else families[0],
            model=model if model is not None else self.digests["model"],
            data=dataset_ref(self.fixture, splits, with_sensitive_attribute=drop_need != repair_pb2.NEED_SENSITIVE_ATTRIBUTE),
            params=p, seed=self.settings.seed,
            budget=repair_pb2.Budget(wall_seconds=self.settings.budget if budget is None else budget,
                                     max_trials=self.settings.max_trials),
        )
        if drop_need != repair_pb2.NEED_TRAINING_RECIPE:
            job.recipe.CopyFrom(_fixture_recipe())
            job.faulty_training_seconds = 1.0
        return job

    def _job_id(self, what: str) -> str:
        return f"conformance-{self.run_id}-{what}"

    def _fix(self, job: repair_pb2.RepairJob, timeout: float | None = None) -> tuple[list, repair_pb2.RepairResult, float]:
        """Runs Fix to the end and checks the stream's shape: events, then exactly one result,
        last. Returns (events before the result, the result, seconds)."""
        timeout = timeout or (job.budget.wall_seconds + self.settings.grace + self.settings.rpc_timeout)
        start = time.monotonic()
        try:
            events = list(self.stub.Fix(repair_pb2.FixRequest(job=job), timeout=timeout))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise _Failed(f"Fix gave no final result within {timeout:.0f} s (budget {job.budget.wall_seconds:g} s)") from exc
            raise
        seconds = time.monotonic() - start
        kinds = [e.WhichOneof("event") for e in events]
        if None in kinds:
            raise _Failed(f"event {kinds.index(None)} of the Fix stream carries no event (empty oneof)")
        results = [i for i, k in enumerate(kinds) if k == "result"]
        if not results:
            raise _Failed(f"the Fix stream ended after {len(events)} events without a result")
        if len(results) > 1:
            raise _Failed(f"the Fix stream sent {len(results)} results (events {results}); the contract allows one")
        if results[0] != len(events) - 1:
            raise _Failed(f"the result is event {results[0]} of {len(events)}: events followed it")
        for i, e in enumerate(events[:-1]):
            if e.WhichOneof("event") == "progress":
                f = e.progress.fraction
                if not (f == -1 or 0.0 <= f <= 1.0) or not np.isfinite(f):
                    raise _Failed(f"progress event {i} has fraction {f}; the contract allows [0, 1] or -1")
        result = events[-1].result
        self._check_result_shape(result)
        return events[:-1], result, seconds

    def _check_result_shape(self, result: repair_pb2.RepairResult) -> None:
        if result.status not in S.values() or result.status == S.REPAIR_STATUS_UNSPECIFIED:
            raise _Failed(f"result status {result.status} is not a RepairStatus the contract defines")
        if result.status != S.REPAIR_STATUS_REPAIRED and not result.message.strip():
            raise _Failed(f"a {_status(result.status)} result carries no message (required for non-REPAIRED results)")

    def _check_model(self, result: repair_pb2.RepairResult) -> str:
        """Downloads the result's model and checks it: valid ONNX, the faulty model's
        signature, finite outputs, and (for REPAIRED) at least one failing input fixed."""
        status = _status(result.status)
        if not result.repaired_model.sha256:
            if result.status == S.REPAIR_STATUS_REPAIRED:
                raise _Failed("a REPAIRED result names no repaired model digest")
            return "no model returned"
        try:
            data = self.store.fetch_bytes(result.repaired_model)
        except ArtifactError as exc:
            raise _Failed(f"the {status} model {result.repaired_model.sha256[:12]} cannot be downloaded: {exc}") from exc
        try:
            repaired = load_model(data)
        except InvalidModelError as exc:
            raise _Failed(f"the {status} model is not a valid ONNX model: {exc}") from exc
        original = load_model(self.fixture.model)
        if signature(repaired) != signature(original):
            raise _Failed(f"the {status} model changed the signature: {signature(original)} -> {signature(repaired)}")
        x, y, _ = load_split(self.fixture.splits["repair"])
        scores = Predictor(data, threads=1).scores(x)
        if not np.all(np.isfinite(scores)):
            raise _Failed(f"the {status} model gives NaN or Inf outputs on the repair split")
        failing = Predictor(self.fixture.model, threads=1).predict(x) != y
        fixed = int((scores.argmax(axis=1)[failing] == y[failing]).sum())
        if result.status == S.REPAIR_STATUS_REPAIRED and fixed == 0:
            raise _Failed(f"REPAIRED, but the model fixes none of the {int(failing.sum())} failing repair inputs")
        return f"model valid, same signature, fixes {fixed}/{int(failing.sum())} failing repair inputs"

    def _expect_error(self, call: Callable[[], Any], codes: Iterable[grpc.StatusCode], what: str) -> grpc.StatusCode:
        codes = tuple(codes)
        try:
            reply = call()
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise _Failed(f"{what}: no answer within {self.settings.rpc_timeout:.0f} s (a hang, not an error)") from exc
            if codes and exc.code() not in codes:
                raise _Failed(f"{what}: expected {'/'.join(c.name for c in codes)}, got {_code(exc)}") from exc
            return exc.code()
        raise _Failed(f"{what}: expected an error status, got an answer: {str(reply).strip()[:200]!r}")

    # ---- checks: identity -------------------------------------------------------------------
    def check_health(self) -> str:
        answers = []
        for service in ("", REPAIR_SERVICE):
            reply = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.settings.rpc_timeout)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                raise _Failed(f"grpc.health.v1 reports {status} for {service or 'the server'!r}")
            answers.append(service or "server")
        return f"SERVING ({', '.join(answers)})"

    def check_reflection(self) -> str:
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = list(self.reflection.ServerReflectionInfo(iter([request]), timeout=self.settings.rpc_timeout))
        names = [s.name for r in replies for s in r.list_services_response.service]
        if REPAIR_SERVICE not in names:
            raise _Failed(f"server reflection lists {names or 'nothing'}, not {REPAIR_SERVICE}")
        return f"lists {', '.join(sorted(names))}"

    def check_describe(self) -> str:
        info = self.stub.Describe(repair_pb2.DescribeRequest(), timeout=self.settings.rpc_timeout)
        problems = []
        if not _NAME.match(info.name):
            problems.append(f"name {info.name!r} is not a lower-case slug")
        if not info.version.strip():
            problems.append("version is empty (it is part of every job key)")
        if info.level not in repair_pb2.RepairLevel.values() or info.level == repair_pb2.REPAIR_LEVEL_UNSPECIFIED:
            problems.append(f"level {info.level} is unset or unknown")
        if not info.summary.strip():
            problems.append("summary is empty")
        if not info.execution_provider.strip():
            problems.append("execution_provider is empty")
        needs = list(info.needs)
        bad_needs = [n for n in needs if n not in _NEED_FIELDS]
        if bad_needs:
            problems.append(f"needs has unset or unknown values {bad_needs}")
        if len(set(needs)) != len(needs):
            problems.append("needs lists a value twice")
        bad_families = [f for f in getattr(info, "fault_families", []) if f not in KNOWN_FAULT_FAMILIES]
        if bad_families:
            problems.append(f"fault_families has unknown entries {bad_families}")
        problems += self._parameter_problems(info.parameters)
        self.report.service = f"{info.name} {info.version}"
        if problems:
            raise _Failed("; ".join(problems))
        self.info = info
        level = repair_pb2.RepairLevel.Name(info.level).removeprefix("REPAIR_LEVEL_").lower()
        return f"{info.name} {info.version}, level {level}, {len(needs)} needs, {len(info.parameters)} parameters"

    @staticmethod
    def _parameter_problems(parameters) -> list[str]:
        problems, seen = [], set()
        for p in parameters:
            where = f"parameter {p.name!r}"
            if not p.name.isidentifier() or keyword.iskeyword(p.name):
                problems.append(f"{where}: the name is not an identifier")
            if p.name in seen:
                problems.append(f"{where} is declared twice")
            seen.add(p.name)
            if p.type not in PARAM_TYPES:
                problems.append(f"{where}: type {p.type!r} is not one of {', '.join(PARAM_TYPES)}")
                continue
            try:
                default = json.loads(p.default_json)
            except ValueError:
                problems.append(f"{where}: default_json {p.default_json!r} is not JSON")
                continue
            fits = {
                "int": isinstance(default, int) and not isinstance(default, bool),
                "float": isinstance(default, (int, float)) and not isinstance(default, bool),
                "str": isinstance(default, str),
                "bool": isinstance(default, bool),
            }[p.type]
            if not fits:
                problems.append(f"{where}: default {p.default_json} is not a {p.type}")
            if not p.help.strip():
                problems.append(f"{where} has no help")
        return problems

    # ---- checks: Check ------------------------------------------------------------------------
    def upload_fixture(self) -> str:
        try:
            self.digests = {"model": self.store.upload_bytes(self.fixture.model)}
            self.digests.update({k: self.store.upload_bytes(v) for k, v in self.fixture.splits.items()})
        except ArtifactError as exc:
            self.digests = {}
            raise _Failed(str(exc)) from exc
        size = sum(d.size_bytes for d in self.digests.values())
        return (f"faulty 2-layer MLP + train/valid/repair blobs ({size} bytes); "
                f"{self.fixture.failing_repair_inputs} failing repair inputs")

    def check_valid_job(self) -> str:
        try:
            reply = self.stub.Check(repair_pb2.CheckRequest(job=self._job()), timeout=self.settings.rpc_timeout)
        except grpc.RpcError as exc:
            if exc.code() in _FETCH_FAILURE and self.suite_owned_store:
                self.store_problem = (f"the service could not read the fixture ({exc.code().name}): it reads from its own "
                                      f"store, not {self.store_address}; pass the store it uses")
                raise _Skipped(self.store_problem) from exc
            raise
        self.adaptable = reply.adaptable
        if not reply.adaptable:
            if not reply.reason.strip():
                raise _Failed("adaptable=false without a reason")
            raise _Skipped(f"not adaptable to the fixture ({reply.reason}); the Fix checks expect UNADAPTABLE")
        if reply.reason:
            raise _Failed(f"adaptable=true but with a reason {reply.reason!r} (the reason is for refusals)")
        return "adaptable"

    def check_parameters_accepted(self) -> str:
        assert self.info is not None
        if not self.info.parameters:
            raise _Skipped("the service declares no parameters")
        given = {p.name: json.loads(p.default_json) for p in self.info.parameters}
        reply = self.stub.Check(repair_pb2.CheckRequest(job=self._job(params={**given, **self.params})),
                                timeout=self.settings.rpc_timeout)
        if reply.adaptable != bool(self.adaptable):
            raise _Failed(f"every declared parameter at its default changes Check's answer to adaptable={reply.adaptable}")
        return f"all {len(given)} declared parameters accepted at their defaults"

    def _refusals(self) -> list[tuple[str, repair_pb2.RepairJob]]:
        """Jobs the service must refuse as UNADAPTABLE: each declared need missing in turn,
        and a fault family it does not declare."""
        jobs = [(f"no {_NEED_FIELDS[n]}", self._job(drop_need=n)) for n in self._needs()]
        families = self._families()
        others = [f for f in KNOWN_FAULT_FAMILIES if families and f not in families]
        if others:
            job = self._job()
            job.fault_family = others[0]
            jobs.append((f"a {others[0]} fault", job))
        return jobs

    def check_missing_need(self) -> str:
        refusals = self._refusals()
        if not refusals:
            raise _Skipped("the service declares no needs and repairs every fault family")
        for what, job in refusals:
            try:
                reply = self.stub.Check(repair_pb2.CheckRequest(job=job), timeout=self.settings.rpc_timeout)
            except grpc.RpcError as exc:
                raise _Failed(f"a job with {what}: an error {_code(exc)} instead of adaptable=false") from exc
            if reply.adaptable:
                raise _Failed(f"a job with {what} is called adaptable")
            if not reply.reason.strip():
                raise _Failed(f"a job with {what}: adaptable=false without a reason")
        return "; ".join(f"{what}: refused" for what, _ in refusals)

    # ---- checks: Fix ------------------------------------------------------------------------
    def check_fix_stream(self) -> str:
        job = self._job(self._job_id("fix"))
        events, result, seconds = self._fix(job)
        self.fix_result = result
        status = _status(result.status)
        if self.adaptable is False:
            if result.status != S.REPAIR_STATUS_UNADAPTABLE:
                raise _Failed(f"Check called the job unadaptable, Fix answered {status}: {result.message[:200]}")
        elif result.status not in ACCEPTABLE_ON_FIXTURE:
            raise _Failed(f"{status} on the fixture: {result.message[:300]}")
        if seconds > job.budget.wall_seconds + self.settings.grace:
            raise _Failed(f"the result came after {seconds:.1f} s, past the budget of {job.budget.wall_seconds:g} s + grace")
        model = self._check_model(result) if result.status in (S.REPAIR_STATUS_REPAIRED, S.REPAIR_STATUS_NOT_REPAIRED) else ""
        return f"{len(events)} events then {status} in {seconds:.1f} s" + (f"; {model}" if model else "")

    def check_idempotency(self) -> str:
        if self.fix_result is None:
            raise _Skipped("fix-stream did not produce a result to compare with")
        _, again, seconds = self._fix(self._job(self._job_id("fix")))
        first = self.fix_result
        if again.status != first.status or again.repaired_model != first.repaired_model:
            raise _Failed(f"the same job_id gave {_status(first.status)} {first.repaired_model.sha256[:12]} and then "
                          f"{_status(again.status)} {again.repaired_model.sha256[:12]}")
        return f"same status and model again ({seconds:.1f} s)"

    def check_fix_missing_need(self) -> str:
        refusals = self._refusals()
        if not refusals:
            raise _Skipped("the service declares no needs and repairs every fault family")
        what, job = refusals[0]
        job.job_id = self._job_id("missing-need")
        try:
            _, result, _ = self._fix(job)
        except grpc.RpcError as exc:
            raise _Failed(f"Fix of a job with {what}: an error {_code(exc)} instead of an UNADAPTABLE result") from exc
        if result.status != S.REPAIR_STATUS_UNADAPTABLE:
            raise _Failed(f"Fix of a job with {what} ended {_status(result.status)}, not UNADAPTABLE: {result.message[:200]}")
        return f"{what}: UNADAPTABLE ({result.message[:120]})"

    def check_cancellation(self) -> str:
        job = self._job(self._job_id("cancel"))
        call = self.stub.Fix(repair_pb2.FixRequest(job=job), timeout=job.budget.wall_seconds + self.settings.grace + 30)
        try:
            first = next(call)
        except StopIteration as exc:
            raise _Failed("the Fix stream ended without any event") from exc
        self._cancelled_mid_stream = first.WhichOneof("event") != "result"
        if self._cancelled_mid_stream:
            call.cancel()
        try:
            for _ in call:
                pass
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise
        # The service must still answer, promptly, once the caller went away.
        self.check_health()
        self.stub.Describe(repair_pb2.DescribeRequest(), timeout=self.settings.rpc_timeout)
        reply = self.stub.Check(repair_pb2.CheckRequest(job=self._job()), timeout=self.settings.rpc_timeout)
        if reply.adaptable != bool(self.adaptable):
            raise _Failed(f"after the cancellation Check answers adaptable={reply.adaptable}, before {self.adaptable}")
        if not self._cancelled_mid_stream:
            raise _Skipped("the job finished before its first event could be cancelled; still serving afterwards")
        return "cancelled after the first event; still healthy, Describe and Check answer"

    def check_cancelled_job_reruns(self) -> str:
        """A cancelled job "may be run again" (repair.proto): running it again must not answer
        CANCELLED from a record of the cancelled run."""
        if not self._cancelled_mid_stream:
            raise _Skipped("no job was cancelled mid-stream")
        # Give the cancelled run time to wind down (cancellation is cooperative) and record
        # whatever it records, so the rerun sees that record rather than racing it.
        time.sleep(self.settings.cancel_settle)
        _, result, seconds = self._fix(self._job(self._job_id("cancel")))
        if result.status == S.REPAIR_STATUS_CANCELLED:
            raise _Failed("running the cancelled job again returns CANCELLED: the cancelled run was recorded as the "
                          "job's result, but a cancelled job 'may be run again'")
        detail = f"rerun ended {_status(result.status)} in {seconds:.1f} s"
        if self.fix_result is not None and result.status != self.fix_result.status:
            # Not a contract breach in words, but worth knowing: an anytime approach's cut-short
            # run was recorded as the job's result.
            detail += f" (the same job uncancelled ended {_status(self.fix_result.status)})"
        return detail

    def check_budget(self) -> str:
        tiny = self.settings.tiny_budget
        job = self._job(self._job_id("budget"), budget=tiny)
        events, result, seconds = self._fix(job)
        allowed = (*ACCEPTABLE_ON_FIXTURE, S.REPAIR_STATUS_UNADAPTABLE)
        if result.status not in allowed:
            raise _Failed(f"a {tiny:g} s budget ended {_status(result.status)}: {result.message[:200]}")
        if seconds > tiny + self.settings.grace:
            raise _Failed(f"a {tiny:g} s budget took {seconds:.1f} s (grace {self.settings.grace:g} s)")
        return f"{tiny:g} s budget: {_status(result.status)} after {seconds:.1f} s"

    # ---- checks: bad inputs -------------------------------------------------------------------
    def check_bad_model(self) -> str:
        junk = self.store.upload_bytes(b"fixbench conformance: these bytes are not an ONNX model\n")
        job = self._job(self._job_id("bad-model"), model=junk)
        invalid = (grpc.StatusCode.INVALID_ARGUMENT,)
        self._expect_error(lambda: self.stub.Check(repair_pb2.CheckRequest(job=job), timeout=self.settings.rpc_timeout),
                           invalid, "Check of a model that is not ONNX")
        self._expect_error(lambda: list(self.stub.Fix(repair_pb2.FixRequest(job=job), timeout=self.settings.rpc_timeout)),
                           invalid, "Fix of a model that is not ONNX")
        return "Check and Fix: INVALID_ARGUMENT"

    def check_unknown_parameter(self) -> str:
        job = self._job(self._job_id("unknown-param"), params={**self.params, "conformance_no_such_parameter": 1})
        invalid = (grpc.StatusCode.INVALID_ARGUMENT,)
        self._expect_error(lambda: self.stub.Check(repair_pb2.CheckRequest(job=job), timeout=self.settings.rpc_timeout),
                           invalid, "Check with an undeclared parameter")
        self._expect_error(lambda: list(self.stub.Fix(repair_pb2.FixRequest(job=job), timeout=self.settings.rpc_timeout)),
                           invalid, "Fix with an undeclared parameter")
        return "Check and Fix: INVALID_ARGUMENT"

    def check_unknown_digest(self) -> str:
        # A digest nobody uploaded: derived from the run id so that it is new to any store.
        missing = hashlib.sha256(f"fixbench conformance {self.run_id} absent blob".encode()).hexdigest()
        absent = make_digest(missing, 1234)
        seen = []
        job = self._job(self._job_id("unknown-model"), model=absent)
        code = self._expect_error(lambda: self.stub.Check(repair_pb2.CheckRequest(job=job), timeout=self.settings.rpc_timeout),
                                  (), "Check of an unknown model digest")
        seen.append(f"Check (model): {code.name}")
        code = self._expect_error(lambda: list(self.stub.Fix(repair_pb2.FixRequest(job=job), timeout=self.settings.rpc_timeout)),
                                  (), "Fix of an unknown model digest")
        seen.append(f"Fix (model): {code.name}")
        # An unknown split may surface later, inside the run: an error status or an
        # INFRA_ERROR / TOOL_ERROR result are both honest, a hang or a success are not.
        job = self._job(self._job_id("unknown-split"), replace_splits={"repair": absent})
        try:
            _, result, _ = self._fix(job, timeout=self.settings.rpc_timeout + self.settings.grace)
        except grpc.RpcError as exc:
            seen.append(f"Fix (repair split): {exc.code().name}")
        else:
            honest = (S.REPAIR_STATUS_INFRA_ERROR, S.REPAIR_STATUS_TOOL_ERROR)
            if self.adaptable is False:
                # A service that refuses the fixture job (e.g. it needs a training history the
                # fixture lacks) may refuse it before reading any split.
                honest = (*honest, S.REPAIR_STATUS_UNADAPTABLE)
            if result.status not in honest:
                raise _Failed(f"Fix with an unknown repair split digest ended {_status(result.status)}: {result.message[:200]}")
            seen.append(f"Fix (repair split): {_status(result.status)}")
        return "; ".join(seen)
