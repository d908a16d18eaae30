"""The Evaluator gRPC service: fetches models and the test split by digest, checks the
repaired model's integrity, and scores it on onnxruntime."""

from __future__ import annotations

import collections
import logging
import threading

import grpc
import numpy as np
from google.protobuf import json_format

from evaluator import properties as props
from fixbench.analysis.errors import EvaluationError
from fixbench.arrays import SplitFormatError, map_split
from fixbench.artifacts.client import ArtifactClient, ArtifactError
from fixbench.artifacts.digest import DigestError, short
from fixbench.onnxio import InvalidModelError
from fixbench.onnxio.validate import warm_up
from fixbench.v1 import evaluator_pb2, evaluator_pb2_grpc

log = logging.getLogger("fixbench.evaluator")
E = evaluator_pb2.EvaluationStatus
KNOWN_PROPERTIES = props.KNOWN_PROPERTIES
_STATUS = {props.OK: E.EVALUATION_STATUS_OK, props.CORRUPTED_OUTPUT: E.EVALUATION_STATUS_CORRUPTED_OUTPUT}


class EvaluationRejected(ValueError):
    """A request the evaluator cannot serve; the message names the problem."""


def _counts(counter) -> str:
    """"shared fetch 3, stream fetch 1": how the store's blobs reached this process."""
    return ", ".join(f"{how} {n}" for how, n in sorted(counter.items())) or "none"


class EvaluatorServicer(evaluator_pb2_grpc.EvaluatorServicer):
    def __init__(self, store_address: str, cache_dir: str):
        self.store = ArtifactClient(store_address, cache_dir)
        if self.store.store_dir is not None:
            log.info("fetching from the store's directory %s where its files can be read (verified), "
                     "else by stream", self.store.store_dir)
        # Every job of a fault is scored on the same test split: it is fetched (verified) and
        # parsed once per digest, and shared read-only by the jobs that follow.
        self._splits: collections.OrderedDict[str, tuple] = collections.OrderedDict()
        self._splits_lock = threading.Lock()
        warm_up()  # the validator's one-off start, before the first Evaluate

    def _split(self, digest) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        with self._splits_lock:
            cached = self._splits.get(digest.sha256)
            if cached is not None:
                self._splits.move_to_end(digest.sha256)
                return cached
        # Mapped from the verified cache file, not read onto the heap: scoring goes through
        # it in batches, so the evaluator's memory follows the batch, not the split's size
        # (issue 23 item 4; benchmarks/bench_evaluator.py prints the table).
        arrays = map_split(self.store.fetch(digest))
        for a in arrays:
            if a is not None:
                a.setflags(write=False)
        with self._splits_lock:
            self._splits[digest.sha256] = arrays
            while len(self._splits) > 4:
                self._splits.popitem(last=False)
        return arrays

    def Evaluate(self, request, context):
        properties = list(request.properties)
        try:
            props.resolve_properties(properties)
        except EvaluationError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            # One progress event, after the fetch: each event is a synchronous send that the
            # handler waits for (1-3 ms on two busy cores), on every job's critical path, and
            # no caller reads them (the orchestrator waits for the result).
            original_bytes = self.store.fetch_bytes(request.original_model)
            repaired_bytes = self._fetch_repaired(request) if request.repaired_model.sha256 else original_bytes
            if repaired_bytes is None:
                yield evaluator_pb2.EvaluateResponse(result=evaluator_pb2.EvaluationResult(
                    status=E.EVALUATION_STATUS_CORRUPTED_OUTPUT,
                    message=f"the repaired model {short(request.repaired_model)} names no blob in the store: "
                            "the approach reported a model it never uploaded (or a malformed digest)"))
                return
            x, y, group = self._split(request.test)
            settings = json_format.MessageToDict(request.settings)
            yield evaluator_pb2.EvaluateResponse(progress=f"fetched the models and the test split; scoring {len(y)} test inputs")
            result = evaluate_models(original_bytes, repaired_bytes, x, y, settings, group=group,
                                     dataset=request.dataset, properties=properties, seed=request.seed,
                                     sensitive_attribute=request.sensitive_attribute, split_digest=request.test.sha256)
        except ArtifactError as exc:
            code = grpc.StatusCode.UNAVAILABLE if exc.code in (None, grpc.StatusCode.UNAVAILABLE) else grpc.StatusCode.NOT_FOUND
            context.abort(code, str(exc))
        except (SplitFormatError, EvaluationRejected, EvaluationError, DigestError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except InvalidModelError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the original model is not usable: {exc}")
        except props.OriginalModelFailed as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        log.info("job %s: %s %s (fetches so far: %s)", request.job_id[:12], E.Name(result.status), result.message,
                 _counts(self.store.transfers))
        yield evaluator_pb2.EvaluateResponse(result=result)

    def _fetch_repaired(self, request) -> bytes | None:
        """The repaired model's bytes, or None when its digest names no blob in the store — an
        outcome of the approach (CORRUPTED_OUTPUT), not an infrastructure failure to retry."""
        try:
            return self.store.fetch_bytes(request.repaired_model)
        except DigestError:
            return None
        except ArtifactError as exc:
            if exc.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise


def evaluate_models(original_bytes: bytes, repaired_bytes: bytes, x: np.ndarray, y: np.ndarray,
                    settings: dict, *, group: np.ndarray | None = None, dataset: str = "",
                    properties: list[str] | tuple[str, ...] = (), seed: int = 0,
                    sensitive_attribute: str = "", split_digest: str = "") -> evaluator_pb2.EvaluationResult:
    """The requested properties of `repaired` against `original` on (x, y), or
    CORRUPTED_OUTPUT (see evaluator.properties.evaluate).

    `settings` is {property: {key: value}} as in EvaluateRequest.settings; the top-level
    key "accuracy_floor" is kept as a shorthand for integrity.relative_floor.
    """
    settings = dict(settings or {})
    if "accuracy_floor" in settings:
        floor = settings.pop("accuracy_floor")
        settings["integrity"] = {**settings.get("integrity", {}), "relative_floor": floor}
    outcome = props.evaluate(original_bytes, None if repaired_bytes == original_bytes else repaired_bytes,
                             x, y, group, dataset=dataset, properties=properties, settings=settings,
                             seed=seed, sensitive_attribute=sensitive_attribute, split_digest=split_digest)
    return evaluator_pb2.EvaluationResult(status=_STATUS[outcome.status], metrics=outcome.metrics,
                                          notes=outcome.notes, details_json=outcome.details_json(),
                                          message=outcome.message)
