"""The gRPC Repair servicer every approach gets for free: input fetching and validation,
budget and cancellation, output validation, status mapping, idempotent job results."""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import queue
import threading
import time
from typing import Any

import grpc
import numpy as np
import numpy.random  # noqa: F401 - imported at start, not by the first job's ctx.rng
from google.protobuf import json_format

from fixbench import __version__
from fixbench.artifacts.client import ArtifactClient, ArtifactError
from fixbench.artifacts.digest import short
from fixbench.onnxio import InvalidModelError, Predictor, execution_provider, load_model
from fixbench.onnxio.validate import signature, warm_up
from fixbench.sdk.approach import NEEDS, Approach, ParamError
from fixbench.sdk.budget import DEFAULT_BUDGET_SECONDS, BudgetError, budget_seconds  # noqa: F401 - re-exported
from fixbench.sdk.context import RepairContext, seed_everything
from fixbench.sdk.errors import Cancelled, InfraError, status_for_exception
from fixbench.sdk.outcome import Outcome
from fixbench.v1 import repair_pb2, repair_pb2_grpc

S = repair_pb2.RepairStatus
log = logging.getLogger("fixbench.sdk")

# Seconds a repair may overrun its budget to hand back its best result before it is cut off.
BUDGET_GRACE_SECONDS = float(os.environ.get("FIXBENCH_BUDGET_GRACE", "10"))
_DONE = object()


class BadArtifactReference(Exception):
    """The job names a digest the store does not hold, or a malformed one: a bad request
    (NOT_FOUND / INVALID_ARGUMENT), not a retryable fault (so not an InfraError)."""

    def __init__(self, message: str, code: grpc.StatusCode):
        super().__init__(message)
        self.code = code


def signature_mismatch(model, data: repair_pb2.DatasetRef) -> str | None:
    """Why `model` cannot be a classifier of the job's data, or None: one input whose shape
    (after the batch axis) is the data's `input_shape`, and a first output of one score per
    class (N, num_classes). Symbolic dimensions match anything. Checked before any approach
    runs, so a model that cannot fit is UNADAPTABLE with this reason, not a TOOL_ERROR later."""
    inputs, outputs = signature(model)
    if len(inputs) != 1:
        return f"the model has {len(inputs)} inputs; a classifier of this data takes exactly one"
    if not outputs:
        return "the model has no output"
    dims = list(inputs[0][1][1:])
    want = [int(d) for d in data.input_shape]
    if want and (len(dims) != len(want) or any(d > 0 and d != w for d, w in zip(dims, want, strict=True))):
        return f"the model takes inputs of shape {dims}, but the data holds inputs of shape {want}"
    out = outputs[0][1]
    if len(out) != 2:
        return (f"the model's output has shape {list(out)}: not one score per class for each input "
                "(a classifier outputs (batch, classes))")
    if data.num_classes > 0 and out[1] > 0 and out[1] != data.num_classes:
        return f"the model scores {out[1]} classes, but the data has {data.num_classes}"
    return None


def torch_device() -> str:
    try:
        import torch
    except ImportError:
        return ""
    return "cuda" if torch.cuda.is_available() and os.environ.get("FIXBENCH_DEVICE", "").lower() != "cpu" else "cpu"


class RepairServicer(repair_pb2_grpc.RepairServicer):
    """`exit_on_abandon`: a repair that ignores its budget keeps a thread Python cannot kill;
    a served process then exits once the TIMEOUT is delivered, so its runtime (the local
    supervisor, a container restart policy) starts a clean one. Off for in-process use."""

    def __init__(self, approach_cls: type[Approach], store_address: str, cache_dir: str,
                 exit_on_abandon: bool = False):
        approach_cls.validate_declaration()
        self.approach_cls = approach_cls
        # No credential of its own: each call carries its job's (RepairJob.store_credential).
        self.store = ArtifactClient(store_address, cache_dir, scope=None)
        self._results: collections.OrderedDict[str, repair_pb2.RepairResult] = collections.OrderedDict()
        self._results_lock = threading.Lock()
        # Check and then Fix see the same model: parse and validate it once per digest.
        self._models: collections.OrderedDict[str, Any] = collections.OrderedDict()
        # Every job of a fault runs the same original model on the same repair split: its
        # onnxruntime session (ctx.original_predictor) and the failing mask the output check
        # needs are made once per digest, not once per job (both are immutable by digest).
        self._predictors: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._failing: collections.OrderedDict[tuple[str, str], np.ndarray] = collections.OrderedDict()
        # Seeding is process-global (torch's RNG, numpy's legacy RNG), so two repairs running
        # at once in one process would not be reproducible: they take turns. Run replicas
        # for parallelism.
        self._repair_lock = threading.Lock()
        # The output check's helper threads (see _finish), started once: a pool per job cost
        # 1-5 ms of thread starts on the job's critical path on two busy cores.
        self._output_pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="output-check")
        self.exit_on_abandon = exit_on_abandon
        self.provider = execution_provider()
        self.device = torch_device() if approach_cls.uses_torch else ""
        warm_up()  # the first job's model validation does not pay the validator's one-off start
        log.info("%s %s: onnxruntime provider %s, torch device %s", approach_cls.name, approach_cls.version,
                 self.provider, self.device or "none")

    # ---- Describe -----------------------------------------------------------------------
    def Describe(self, request, context):
        cls = self.approach_cls
        return repair_pb2.DescribeResponse(
            name=cls.name, version=cls.version, level=cls.level_proto(), paper=cls.paper, summary=cls.summary,
            needs=[NEEDS[n] for n in cls.needs], parameters=[p.to_proto() for p in cls.params],
            execution_provider=self.provider, torch_device=self.device, sdk_version=__version__,
            fault_families=list(cls.fault_families),
        )

    # ---- Check --------------------------------------------------------------------------
    def _fetch(self, digest, scope: str | None = None) -> bytes:
        try:
            return self.store.fetch_bytes(digest, scope or None)
        except ArtifactError as exc:
            if exc.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise BadArtifactReference(str(exc), exc.code) from exc
            if exc.code == grpc.StatusCode.PERMISSION_DENIED:
                # Outside the job's credential (e.g. the test split): the approach's error.
                raise PermissionError(f"the store refused {short(digest)}: {exc}") from exc
            raise InfraError(f"cannot fetch {short(digest)}: {exc}") from exc

    def _make_context(self, job, emit=None) -> RepairContext:
        params = self.approach_cls.resolve_params(json_format.MessageToDict(job.params))
        ctx = RepairContext(job, params, lambda digest: self._fetch(digest, job.store_credential), budget_seconds(job),
                            emit)
        cached = self._models.get(job.model.sha256)
        if cached is not None:
            ctx.__dict__["model_bytes"], ctx.__dict__["model"] = cached
        predictor = self._predictors.get(job.model.sha256)
        if predictor is not None:
            ctx.__dict__["original_predictor"] = predictor
        return ctx

    def _remember_predictor(self, ctx: RepairContext) -> None:
        """Keeps the original model's session once a job made it (approaches and the output
        check ask for it through ctx.original_predictor), for the next jobs of the fault."""
        predictor = ctx.__dict__.get("original_predictor")
        if predictor is None:
            return
        with self._results_lock:
            self._predictors[ctx.job.model.sha256] = predictor
            while len(self._predictors) > 4:
                self._predictors.popitem(last=False)

    def _cached_failing_mask(self, ctx: RepairContext, split: str) -> np.ndarray | None:
        with self._results_lock:
            return self._failing.get((ctx.job.model.sha256, getattr(ctx.job.data, split).sha256))

    def _failing_mask(self, ctx: RepairContext, split: str) -> np.ndarray:
        """ctx.failing_mask(split), computed once per (model, split) digest pair: the faulty
        model and the split are the same bytes for every job of a fault."""
        key = (ctx.job.model.sha256, getattr(ctx.job.data, split).sha256)
        mask = self._cached_failing_mask(ctx, split)
        if mask is None:
            mask = ctx.failing_mask(split)
            mask.setflags(write=False)
            with self._results_lock:
                self._failing[key] = mask
                while len(self._failing) > 8:
                    self._failing.popitem(last=False)
        return mask

    def _remember_model(self, ctx: RepairContext) -> None:
        with self._results_lock:
            self._models[ctx.job.model.sha256] = (ctx.model_bytes, ctx.model)
            while len(self._models) > 8:
                self._models.popitem(last=False)

    def _missing_needs(self, job) -> str | None:
        families = self.approach_cls.fault_families
        if job.fault_family and job.fault_family not in families:
            return (f"{self.approach_cls.name} repairs {' and '.join(f.replace('_', '-') for f in families)} faults; "
                    f"{job.fault_id or 'this fault'} is a {job.fault_family.replace('_', '-')} fault")
        data = job.data
        have = {
            "training_data": bool(data.train.sha256),
            "validation_data": bool(data.valid.sha256),
            "repair_data": bool(data.repair.sha256),
            "training_recipe": bool(job.recipe.architecture),
            "sensitive_attribute": bool(data.sensitive_attribute),
        }
        missing = [n.replace("_", " ") for n in self.approach_cls.needs if not have[n]]
        if missing:
            return f"{self.approach_cls.name} needs {', '.join(missing)}, which this fault does not provide"
        return None

    def _check(self, job, context) -> str | None:
        if not job.model.sha256:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the job names no model digest")
        reason = self._missing_needs(job)
        if reason:
            return reason
        try:
            ctx = self._make_context(job)
        except (ParamError, BudgetError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            ctx.model  # noqa: B018 - validates the model before the approach sees it
            self._remember_model(ctx)
            mismatch = signature_mismatch(ctx.model, job.data)
            if mismatch:
                return mismatch
            return self.approach_cls().check(ctx)
        except InvalidModelError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"model {short(job.model)} is not usable: {exc}")
        except BadArtifactReference as exc:
            context.abort(exc.code, str(exc))
        except InfraError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    def Check(self, request, context):
        reason = self._check(request.job, context)
        return repair_pb2.CheckResponse(adaptable=reason is None, reason=reason or "")

    # ---- Fix ----------------------------------------------------------------------------
    def Fix(self, request, context):
        job = request.job
        with self._results_lock:
            cached = self._results.get(job.job_id) if job.job_id else None
        if cached is not None:
            # A retried job (e.g. the orchestrator restarted): same answer, no second run.
            yield repair_pb2.FixResponse(log=f"job {job.job_id} already finished here; returning its result")
            yield repair_pb2.FixResponse(result=cached)
            return
        t0 = time.monotonic()
        reason = self._check(job, context)
        if reason:
            yield repair_pb2.FixResponse(result=repair_pb2.RepairResult(status=S.REPAIR_STATUS_UNADAPTABLE, message=reason))
            return
        events: queue.Queue = queue.Queue()
        ctx = self._make_context(job, emit=events.put)
        context.add_callback(lambda: ctx.cancel("the caller cancelled the job"))
        holder: dict[str, Any] = {}

        def work():
            try:
                acquired = self._repair_lock.acquire(blocking=False)
                if not acquired:
                    # Tells the caller the job waits for the repair ahead of it (its budget
                    # has not started), so a silent wait is not taken for a hang.
                    events.put(repair_pb2.FixResponse(progress=repair_pb2.Progress(
                        fraction=0.0, stage="queued", message="waiting for the repair ahead of this job")))
                while not acquired:
                    # A cancelled job stops waiting for its turn; the budget does not run while
                    # it queues (its clock starts below), so waiting is never a TIMEOUT.
                    if ctx.cancelled:
                        raise Cancelled(ctx._cancel_reason or "cancelled while queued")
                    acquired = self._repair_lock.acquire(timeout=0.5)
            except BaseException as exc:
                holder["error"] = exc
                holder["setup"] = time.monotonic() - t0
                events.put(_DONE)
                return
            try:
                ctx.start_clock()
                holder["started"] = True
                # Tells the caller that the budget clock starts now (its deadline counts from here).
                events.put(repair_pb2.FixResponse(progress=repair_pb2.Progress(
                    fraction=0.0, stage="started", message="the repair left the queue; its budget starts now",
                    metrics={"budget_seconds": float(ctx.budget_seconds or 0.0)})))
                seed_everything(ctx.seed, self.approach_cls.uses_torch)
                ctx.split("repair") if ctx.has_split("repair") else None
                holder["setup"] = time.monotonic() - t0
                start = time.monotonic()
                holder["outcome"] = self.approach_cls().repair(ctx)
                holder["repair_seconds"] = time.monotonic() - start
            except BaseException as exc:  # every escape becomes a status, never a dead stream
                holder["error"] = exc
                holder.setdefault("setup", time.monotonic() - t0)
            finally:
                self._repair_lock.release()
                events.put(_DONE)

        worker = threading.Thread(target=work, name=f"repair-{job.job_id[:12]}", daemon=True)
        worker.start()
        timed_out = False
        while True:
            # Read each time: the clock starts only when this job's turn comes.
            hard_deadline = None if ctx.deadline is None or "started" not in holder else \
                ctx.deadline + BUDGET_GRACE_SECONDS
            wait = 0.5 if hard_deadline is None else max(0.0, min(0.5, hard_deadline - time.monotonic()))
            try:
                event = events.get(timeout=wait)
            except queue.Empty:
                if hard_deadline is not None and time.monotonic() >= hard_deadline:
                    # The approach ignored its budget; it keeps its thread but loses the job.
                    ctx.cancel("budget exhausted")
                    timed_out = True
                    break
                continue
            if event is _DONE:
                break
            if context.is_active():
                yield event
        if isinstance(holder.get("error"), BadArtifactReference):
            # A split digest the store lacks (or a malformed one) is the caller's bad request.
            context.abort(holder["error"].code, str(holder["error"]))
        result = yield from self._result(job, ctx, holder, timed_out, t0, context)
        self._remember_predictor(ctx)
        # Only an answer delivered to a caller who is still there becomes the job's answer:
        # a cancelled run (or one cut short by the cancel) may be run again, as the contract says.
        if job.job_id and context.is_active() and not ctx.cancelled and result.status not in (
                S.REPAIR_STATUS_INFRA_ERROR, S.REPAIR_STATUS_CANCELLED):
            with self._results_lock:
                self._results[job.job_id] = result
                while len(self._results) > 256:
                    self._results.popitem(last=False)
        log.info("job %s: %s %s", job.job_id[:12], S.Name(result.status), result.message[:200])
        yield repair_pb2.FixResponse(result=result)
        if timed_out and self.exit_on_abandon:
            log.error("job %s ignored its budget and still holds a thread; exiting so the runtime restarts "
                      "this service clean", job.job_id[:12])
            threading.Timer(1.0, os._exit, args=(3,)).start()

    def _result(self, job, ctx: RepairContext, holder: dict, timed_out: bool, t0: float, context):
        """The job's RepairResult (returned); a generator, as the output check may stream one
        event (the upload notice, see _finish) before the result is known."""
        timings = repair_pb2.Timings(setup_seconds=holder.get("setup", 0.0), repair_seconds=holder.get("repair_seconds", 0.0))
        if timed_out:
            result = repair_pb2.RepairResult(
                status=S.REPAIR_STATUS_TIMEOUT,
                message=f"no result within the budget of {ctx.budget_seconds:.1f} s (+{BUDGET_GRACE_SECONDS:.0f} s grace)",
            )
            timings.repair_seconds = time.monotonic() - t0 - timings.setup_seconds
        elif "error" in holder:
            status, message = status_for_exception(holder["error"])
            result = repair_pb2.RepairResult(status=status, message=message)
        else:
            out_start = time.monotonic()
            result = yield from self._finish(ctx, holder["outcome"], context)
            timings.output_seconds = time.monotonic() - out_start
        timings.total_seconds = time.monotonic() - t0
        result.timings.CopyFrom(timings)
        return result

    def _finish(self, ctx: RepairContext, outcome: Any, context):
        """Validates the approach's output and decides REPAIRED vs NOT_REPAIRED by one rule;
        returns the RepairResult (a generator: see below for the one event it may yield)."""
        if not isinstance(outcome, Outcome):
            return repair_pb2.RepairResult(status=S.REPAIR_STATUS_TOOL_ERROR,
                                           message=f"repair() returned {type(outcome).__name__}, not an Outcome")
        result = repair_pb2.RepairResult(message=outcome.message, metrics=outcome.metrics)
        try:
            result.diagnosis.CopyFrom(outcome.diagnosis.to_proto())
        except Exception as exc:
            return repair_pb2.RepairResult(status=S.REPAIR_STATUS_TOOL_ERROR, message=f"invalid diagnosis: {exc}")
        if outcome.model is None:
            result.status = S.REPAIR_STATUS_NOT_REPAIRED
            result.message = outcome.message or "the approach produced no repaired model"
            return result
        data = outcome.model if isinstance(outcome.model, bytes) else outcome.model.SerializeToString()
        if data == ctx.model_bytes:
            # The model came back unchanged: already validated, already stored, fixes nothing.
            result.status = S.REPAIR_STATUS_NOT_REPAIRED
            result.repaired_model.CopyFrom(ctx.job.model)
            result.metrics["repair_fixed"] = 0.0
            result.message = result.message or "the model came back unchanged"
            return result
        try:
            repaired = load_model(data)
        except InvalidModelError as exc:
            result.status = S.REPAIR_STATUS_CORRUPTED_OUTPUT
            result.message = f"the repaired model is not a valid ONNX model: {exc}"
            return result
        if signature(repaired) != signature(ctx.model):
            result.status = S.REPAIR_STATUS_CORRUPTED_OUTPUT
            result.message = f"the repaired model changed the input/output signature: {signature(ctx.model)} -> {signature(repaired)}"
            return result
        # The upload and the check on the repair split are independent (the bytes are valid
        # ONNX with the faulty model's signature): the check runs in helper threads while this
        # one uploads (onnxruntime, hashing and the gRPC stream release the GIL), and once the
        # upload stands the caller hears the digest (output_notice), so that its evaluation of
        # the test split runs while this service still checks the model instead of after it.
        # The two scorings were most of a small model's per-job overhead (bench_overhead: quick
        # finetune jobs 100-115 ms -> about 80 ms on two busy cores). A model the check then
        # finds corrupted was stored for nothing; the result never names it.
        has_repair = ctx.has_split("repair")
        pool = self._output_pool
        failing, pending_mask = None, None
        if has_repair and self._cached_failing_mask(ctx, "repair") is None:
            # A fault's first job here: the faulty model's own scores on the repair split
            # (its session, a full pass) are made beside the repaired model's, not after.
            pending_mask = pool.submit(self._failing_mask, ctx, "repair")
        check = pool.submit(self._check_output, ctx, data) if has_repair else None
        try:
            uploaded, upload_error = self.store.upload_bytes(data, scope=ctx.job.store_credential or None), None
        except ArtifactError as exc:
            uploaded, upload_error = None, exc
        if uploaded is not None and check is not None and context.is_active():
            yield repair_pb2.FixResponse(log=output_notice(uploaded))
        verdict = check.result() if check is not None else None
        if pending_mask is not None and not isinstance(verdict, str):
            failing = pending_mask.result()  # a failure (the faulty model does not run) is raised as before
        if isinstance(verdict, str):
            result.status = S.REPAIR_STATUS_CORRUPTED_OUTPUT
            result.message = verdict
            return result
        if verdict is not None:
            scores, repair = verdict, ctx.split("repair")
            if failing is None:
                failing = self._failing_mask(ctx, "repair")  # cached by an earlier job of the fault
            fixed = int((scores.argmax(axis=1)[failing] == repair.y[failing]).sum())
            result.metrics["repair_failing"] = float(failing.sum())
            result.metrics["repair_fixed"] = float(fixed)
            result.metrics["repair_acc_after"] = float((scores.argmax(axis=1) == repair.y).mean() * 100)
            repaired_any = fixed > 0
        else:
            repaired_any = True
        result.status = S.REPAIR_STATUS_REPAIRED if repaired_any and not outcome.not_repaired else S.REPAIR_STATUS_NOT_REPAIRED
        if result.status == S.REPAIR_STATUS_NOT_REPAIRED and not result.message:
            result.message = "the model fixes none of the failing repair inputs"
        if upload_error is not None:
            return repair_pb2.RepairResult(status=S.REPAIR_STATUS_INFRA_ERROR,
                                           message=f"cannot upload the repaired model: {upload_error}")
        result.repaired_model.CopyFrom(uploaded)
        return result

    def _check_output(self, ctx: RepairContext, data: bytes) -> str | np.ndarray:
        """The repaired model's scores on the repair split, or why the output is corrupted
        (it does not run, or gives NaN / Inf)."""
        repair = ctx.split("repair")
        try:
            scores = Predictor(data, spinning=False).scores(repair.x)
        except Exception as exc:
            return f"the repaired model does not run on the repair split: {exc}"
        if not np.all(np.isfinite(scores)):
            return "the repaired model gives NaN or Inf outputs on the repair split"
        return scores


# The SDK's notice, streamed as a log line once a repaired model is uploaded and while the
# SDK still checks it: "<prefix><sha256 hex> <size in bytes>". A caller may start evaluating
# that digest early (the orchestrator does), but only the final RepairResult decides: an
# evaluation is used only when the result names the same digest. A log line, not a new event
# type or a Progress stage, so that older callers and every test that reads the stream's
# stages see the stream they did before.
OUTPUT_NOTICE_PREFIX = "fixbench-sdk: repaired model uploaded, checking it on the repair split: sha256:"


def output_notice(digest) -> str:
    return f"{OUTPUT_NOTICE_PREFIX}{digest.sha256} {int(digest.size_bytes)}"


def parse_output_notice(line: str) -> tuple[str, int] | None:
    """(sha256, size_bytes) from an output notice, or None for any other line."""
    if not line.startswith(OUTPUT_NOTICE_PREFIX):
        return None
    sha, _, size = line[len(OUTPUT_NOTICE_PREFIX):].partition(" ")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha) or not size.isdigit():
        return None
    return sha, int(size)
