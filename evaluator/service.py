"""The Evaluator gRPC service: fetches models and the test split by digest, checks the
repaired model's integrity, and scores it on onnxruntime."""

from __future__ import annotations

import json
import logging

import grpc
import numpy as np
from google.protobuf import json_format

from fixbench.arrays import SplitFormatError, load_split
from fixbench.artifacts.client import ArtifactClient, ArtifactError
from fixbench.onnxio import InvalidModelError, Predictor, load_model
from fixbench.onnxio.validate import signature
from evaluator.effectiveness import effectiveness_metrics
from fixbench.v1 import evaluator_pb2, evaluator_pb2_grpc

log = logging.getLogger("fixbench.evaluator")
E = evaluator_pb2.EvaluationStatus
KNOWN_PROPERTIES = ("accuracy",)


class EvaluationRejected(ValueError):
    """A request the evaluator cannot serve; the message names the problem."""


class EvaluatorServicer(evaluator_pb2_grpc.EvaluatorServicer):
    def __init__(self, store_address: str, cache_dir: str):
        self.store = ArtifactClient(store_address, cache_dir)

    def Evaluate(self, request, context):
        properties = list(request.properties) or ["accuracy"]
        unknown = [p for p in properties if p not in KNOWN_PROPERTIES]
        if unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unknown evaluation propert{'y' if len(unknown) == 1 else 'ies'} {unknown}; known: {list(KNOWN_PROPERTIES)}")
        try:
            yield evaluator_pb2.EvaluateResponse(progress="fetching models and test split")
            original_bytes = self.store.fetch_bytes(request.original_model)
            repaired_bytes = self.store.fetch_bytes(request.repaired_model) if request.repaired_model.sha256 else original_bytes
            x, y, group = load_split(self.store.fetch_bytes(request.test))
            settings = json_format.MessageToDict(request.settings)
            result = evaluate_models(original_bytes, repaired_bytes, x, y, settings)
        except ArtifactError as exc:
            code = grpc.StatusCode.UNAVAILABLE if exc.code in (None, grpc.StatusCode.UNAVAILABLE) else grpc.StatusCode.NOT_FOUND
            context.abort(code, str(exc))
        except (SplitFormatError, EvaluationRejected) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except InvalidModelError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the original model is not usable: {exc}")
        log.info("job %s: %s %s", request.job_id[:12], E.Name(result.status), result.message)
        yield evaluator_pb2.EvaluateResponse(result=result)


def evaluate_models(original_bytes: bytes, repaired_bytes: bytes, x: np.ndarray, y: np.ndarray,
                    settings: dict) -> evaluator_pb2.EvaluationResult:
    """Effectiveness of `repaired` against `original` on (x, y), or CORRUPTED_OUTPUT."""
    original = load_model(original_bytes)
    before = Predictor(original_bytes).predict(x)
    if len(before) != len(y):
        raise EvaluationRejected(f"the test split has {len(y)} labels but the model gave {len(before)} predictions")
    corrupted = _integrity(original, repaired_bytes, x)
    if isinstance(corrupted, str):
        return evaluator_pb2.EvaluationResult(status=E.EVALUATION_STATUS_CORRUPTED_OUTPUT, message=corrupted)
    after = corrupted
    metrics = effectiveness_metrics(y, before, after)
    floor = float(settings.get("accuracy_floor", 0.5))
    if metrics["acc_after"] < floor * metrics["acc_before"]:
        return evaluator_pb2.EvaluationResult(
            status=E.EVALUATION_STATUS_CORRUPTED_OUTPUT, metrics=metrics,
            message=f"accuracy collapsed from {metrics['acc_before']:.2f} % to {metrics['acc_after']:.2f} % "
                    f"(below {floor:.0%} of the original)",
        )
    details = {"correct_after": np.flatnonzero(after == y).tolist()}
    return evaluator_pb2.EvaluationResult(status=E.EVALUATION_STATUS_OK, metrics=metrics, details_json=json.dumps(details))


def _integrity(original, repaired_bytes: bytes, x: np.ndarray) -> np.ndarray | str:
    """Predictions of the repaired model, or a reason why it is corrupted."""
    try:
        repaired = load_model(repaired_bytes)
    except InvalidModelError as exc:
        return f"the repaired model is not a valid ONNX model: {exc}"
    if signature(repaired) != signature(original):
        return "the repaired model changed the input/output signature"
    try:
        scores = Predictor(repaired_bytes).scores(x)
    except Exception as exc:  # onnxruntime raises its own exception types
        return f"the repaired model does not run on the test split: {exc}"
    if not np.all(np.isfinite(scores)):
        return "the repaired model gives NaN or Inf outputs on the test split"
    return scores.argmax(axis=1)
