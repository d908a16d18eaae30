"""One evaluation of a job: the properties asked for, computed by the library modules, with
the settings checked. The gRPC service downloads the artifacts and calls `evaluate`.

Properties: "accuracy" (RR, NFR, ⇑ACC, per-class accuracy), "compatibility" (BTC, BEC),
"change" (size, weights changed), "robustness" (PGD/FGSM ASR behind the parity gate),
"fairness" (AAOD, DPD, EOD on the split's sensitive attribute). Integrity is checked on
every evaluation. Units: accuracies, RR, NFR, ⇑ACC, BTC, BEC and ASR are percentages;
fairness metrics are fractions in [0, 1].
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from evaluator import (
    change,
    compatibility,
    effectiveness,
    fairness,
    integrity,
    parity,
    robustness,
    scoring,
)
from fixbench.analysis.errors import (
    FairnessUndefinedError,
    InvalidSettingError,
    MissingSensitiveAttributeError,
    check_same_length,
)

# Property names and the settings schema live in the library (the orchestrator checks specs
# by them); re-exported here for the evaluator's callers.
from fixbench.analysis.evaluation_settings import (
    _SETTING_KEYS as _SETTING_KEYS,
)
from fixbench.analysis.evaluation_settings import (
    DEFAULT_PROPERTIES as DEFAULT_PROPERTIES,
)
from fixbench.analysis.evaluation_settings import (
    KNOWN_PROPERTIES as KNOWN_PROPERTIES,
)
from fixbench.analysis.evaluation_settings import (
    SETTING_SECTIONS as SETTING_SECTIONS,
)
from fixbench.analysis.evaluation_settings import (
    check_settings,
    resolve_properties,
)
from fixbench.arrays import release
from fixbench.onnxio import InvalidModelError, Predictor, load_model

OK = integrity.OK
CORRUPTED_OUTPUT = integrity.CORRUPTED_OUTPUT


@dataclass
class EvaluationOutcome:
    """What the service returns: status ("ok" / "corrupted_output"), flat metrics, per-
    property notes (why something is unsupported or skipped), structured details."""

    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    def details_json(self) -> str:
        """details as JSON; NaN/Inf become null (JSON has no NaN), keys become strings."""
        return json.dumps(_jsonable(self.details), sort_keys=True, allow_nan=False)


def _jsonable(v):
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        if all(type(x) is int for x in v):
            # Index lists (correct_before / correct_after: one entry per test input) hold
            # nothing to convert; walking them item by item was ~4 ms of a small Evaluate.
            return list(v)
        return [_jsonable(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _device() -> str:
    from fixbench.onnxio import execution_provider

    if execution_provider() == "CUDAExecutionProvider":
        import torch

        if torch.cuda.is_available():
            return "cuda"
    return "cpu"


class OriginalModelFailed(RuntimeError):
    """The fault's original model fails to run on the test split: the fault's error (the
    service answers FAILED_PRECONDITION), never the approach's, and no transient one to retry."""


_ORIGINALS: collections.OrderedDict[tuple[str, str], tuple[Predictor, np.ndarray]] = collections.OrderedDict()
_ORIGINALS_LOCK = threading.Lock()
_MAKING: dict[tuple[str, str], threading.Lock] = {}  # originals being scored, by key
# sha256 of original models that passed load_model: validation is a function of the bytes,
# and every job of a fault sends the same original (0.7-2 ms a job for LeNet-5, far more for
# large models); a known one is only parsed, into a fresh ModelProto of the caller's own.
_VALID_ORIGINALS: collections.OrderedDict[str, None] = collections.OrderedDict()


def _load_original(original_bytes: bytes) -> tuple[onnx.ModelProto, str]:
    """(the original model, validated, its sha256)."""
    sha = hashlib.sha256(original_bytes).hexdigest()
    with _ORIGINALS_LOCK:
        known = sha in _VALID_ORIGINALS
    if not known:
        model = load_model(original_bytes)
        with _ORIGINALS_LOCK:
            _VALID_ORIGINALS[sha] = None
            while len(_VALID_ORIGINALS) > 16:
                _VALID_ORIGINALS.popitem(last=False)
        return model, sha
    model = onnx.ModelProto()
    model.ParseFromString(original_bytes)
    return model, sha


def _digest_of_array(x: np.ndarray, rows: int = 1024) -> str:
    """sha256 of the array's bytes (C order), hashed `rows` at a time: a memory-mapped test
    split (the evaluator's) keeps only those rows' pages resident (fixbench.arrays.release)."""
    h = hashlib.sha256()
    x = np.ascontiguousarray(x)
    for i in range(0, max(len(x), 1), rows):
        part = x[i : i + rows]
        h.update(part.data)
        release(part)
    return h.hexdigest()


def _original_scores(original_bytes: bytes, x: np.ndarray, original_sha: str = "",
                     split_digest: str = "") -> tuple[Predictor, np.ndarray]:
    """Every job of a fault scores the same original model on the same split: build its
    session and scores once (keyed by content digests, a few entries kept). `original_sha`:
    the bytes' sha256 when the caller has it; `split_digest`: the digest of the verified split
    that `x` was read from, which then keys the scores instead of a hash of `x` (a full pass
    over the test split every job: 1.5-3.5 ms for 750 MNIST inputs, linear in the split)."""
    split_key = f"split {split_digest}" if split_digest else _digest_of_array(x)
    key = (original_sha or hashlib.sha256(original_bytes).hexdigest(), split_key)
    with _ORIGINALS_LOCK:
        if key in _ORIGINALS:
            _ORIGINALS.move_to_end(key)
            return _ORIGINALS[key]
        making = _MAKING.setdefault(key, threading.Lock())
    # One caller scores a given original; one that asks meanwhile (the study's warm-up and
    # its first job) waits for those scores instead of computing them a second time.
    with making:
        with _ORIGINALS_LOCK:
            if key in _ORIGINALS:
                return _ORIGINALS[key]
        try:
            predictor = Predictor(original_bytes, spinning=False)
            entry = (predictor, predictor.scores(x))
            entry[1].setflags(write=False)
            with _ORIGINALS_LOCK:
                _ORIGINALS[key] = entry
                while len(_ORIGINALS) > 4:
                    _ORIGINALS.popitem(last=False)
        finally:
            with _ORIGINALS_LOCK:
                _MAKING.pop(key, None)
    return entry


def evaluate(
    original_bytes: bytes,
    repaired_bytes: bytes | None,
    x: np.ndarray,
    y: np.ndarray,
    group: np.ndarray | None = None,
    *,
    dataset: str = "",
    properties: Sequence[str] = (),
    settings: Mapping[str, Any] | None = None,
    seed: int = 0,
    sensitive_attribute: str = "",
    split_digest: str = "",
) -> EvaluationOutcome:
    """Evaluates the repaired model against the original on one split (see module doc).

    `repaired_bytes=None` (the approach produced no model) scores the original against
    itself. Raises an EvaluationError subclass for a bad request (unknown property or
    setting, length mismatch, fairness naming a sensitive attribute the split lacks, a model whose output
    is not class scores); model-specific limits (a failed parity gate, a single group)
    become notes. `split_digest`: the digest of the verified split that x and y were read
    from, when the caller has one (the service): it keys the original's cached scores.
    """

    props = resolve_properties(properties)
    cfg = check_settings(settings)
    n = check_same_length(x=x, y=y)
    if group is not None:
        check_same_length(y=y, group=group)
    original, original_sha = _load_original(original_bytes)
    scoring.check_declared_output(original, "original model")
    outcome = EvaluationOutcome(status=OK)
    try:
        repaired = load_model(repaired_bytes) if repaired_bytes is not None else original
    except InvalidModelError as exc:
        return _corrupted(outcome, f"the repaired model is not a valid ONNX model: {exc}")
    verdict = integrity.check_integrity(original, repaired, None, None, None)
    if not verdict.ok:
        return _corrupted(outcome, verdict.reason)
    scoring.check_declared_output(repaired, "repaired model")

    try:
        pred_orig, raw_before = _original_scores(original_bytes, x, original_sha, split_digest)
    except Exception as exc:  # noqa: BLE001 — onnxruntime raises its own exception types
        raise OriginalModelFailed(f"the fault's original model does not run on the test split: {exc}") from exc
    scores_before = scoring.check_scores(raw_before, n, "original model")
    try:
        if repaired_bytes is None:
            # No repaired model (noop, an approach that found nothing): the original's scores
            # on this split are already known, and scoring it again gives the same numbers.
            pred_rep, raw_after = pred_orig, raw_before
        else:
            pred_rep = Predictor(repaired_bytes, spinning=False)
            raw_after = pred_rep.scores(x)
    except Exception as exc:  # noqa: BLE001 — onnxruntime raises its own exception types
        return _corrupted(outcome, f"the repaired model does not run on the test split: {exc}")
    scores_after = scoring.check_scores(raw_after, n, "repaired model")
    before = scores_before.argmax(axis=1)
    after = scores_after.argmax(axis=1) if np.all(np.isfinite(scores_after)) else np.full(n, -1)

    eff = effectiveness.effectiveness_metrics(y, before, after)
    thresholds = integrity.IntegrityThresholds(**cfg.get("integrity", {}))
    verdict = integrity.check_integrity(
        original,
        repaired,
        scores_after,
        eff["acc_before"],
        eff["acc_after"],
        thresholds,
    )
    if not verdict.ok:
        outcome.status, outcome.message = verdict.status, verdict.reason
        outcome.notes["integrity"] = verdict.reason

    if "accuracy" in props:
        outcome.metrics.update(eff)
        outcome.details["per_class"] = effectiveness.per_class_effectiveness(y, before, after)
        # Which test inputs each model gets right, for per-input analyses downstream (the
        # orchestrator intersects them over a study's models to pick common attack inputs).
        outcome.details["correct_before"] = np.flatnonzero(before == y).tolist()
        outcome.details["correct_after"] = np.flatnonzero(after == y).tolist()
    if "compatibility" in props:
        comp = compatibility.backward_compatibility(y, before, after)
        outcome.metrics.update({"btc": comp["btc"], "bec": comp["bec"], "nfr": comp["nfr"]})
    if "change" in props:
        ch_metrics, ch_details = change.model_change(
            original_bytes, repaired_bytes or original_bytes, **cfg.get("change", {})
        )
        outcome.metrics.update(ch_metrics)
        outcome.details["change"] = ch_details
    if "fairness" in props:
        _fairness(outcome, y, before, after, group, sensitive_attribute)
    if "robustness" in props:
        if not verdict.ok:
            outcome.notes["robustness"] = "skipped: the repaired model is corrupted"
        else:
            _robustness(
                outcome,
                original,
                repaired if repaired_bytes is not None else None,
                pred_orig,
                pred_rep,
                scores_before,
                scores_after,
                x,
                y,
                dataset,
                cfg,
                seed,
            )
    if not outcome.message:
        outcome.message = f"evaluated {', '.join(props)} on {n} inputs"
    return outcome


def _given_indices(values, n: int) -> np.ndarray:
    """settings.robustness.indices as sorted unique int indices into the test split."""
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v):
            raise InvalidSettingError(f"settings.robustness.indices must hold integer indices, got {v!r}")
        if not 0 <= int(v) < n:
            raise InvalidSettingError(f"settings.robustness.indices holds {int(v)}, outside the test split [0, {n})")
        out.append(int(v))
    return np.array(sorted(set(out)), dtype=np.int64)


def _corrupted(outcome: EvaluationOutcome, reason: str) -> EvaluationOutcome:
    outcome.status, outcome.message = CORRUPTED_OUTPUT, reason
    outcome.notes["integrity"] = reason
    return outcome


def _fairness(outcome, y, before, after, group, sensitive_attribute) -> None:
    if group is None:
        # Naming an attribute the data lacks is a broken request; asking for fairness on a
        # dataset that declares none (a study mixing MNIST and UTKFace) is not.
        if sensitive_attribute:
            raise MissingSensitiveAttributeError(
                f"fairness asks for sensitive attribute {sensitive_attribute!r}, "
                "but the dataset's split has no 'group' array"
            )
        outcome.notes["fairness"] = "unsupported: the dataset declares no sensitive attribute"
        return
    try:
        metrics, details = fairness.fairness_change(y, before, after, group)
    except FairnessUndefinedError as exc:
        outcome.notes["fairness"] = f"unsupported: {exc}"
        return
    outcome.metrics.update(metrics)
    outcome.details["fairness"] = details
    undefined = [k for k in ("aaod_before", "aaod_after") if math.isnan(metrics[k])]
    if undefined:
        outcome.notes["fairness"] = "AAOD undefined: no group pair has a class with defined TPR or FPR"


def _robustness(
    outcome,
    original,
    repaired,
    pred_orig,
    pred_rep,
    scores_before,
    scores_after,
    x,
    y,
    dataset,
    cfg,
    seed,
) -> None:
    rc = cfg.get("robustness", {})
    pc = cfg.get("parity", {})
    eps = float(rc["eps"]) if "eps" in rc else robustness.default_epsilon(dataset)
    attack = rc.get("attack", "pgd")
    if attack not in ("pgd", "fgsm"):
        raise InvalidSettingError(f"settings.robustness.attack must be 'pgd' or 'fgsm', got {attack!r}")
    bounds = rc["bounds"] if "bounds" in rc else robustness.default_bounds(dataset)
    if bounds is not None:
        if len(bounds) != 2:
            raise InvalidSettingError(f"settings.robustness.bounds must be [low, high] or null, got {bounds}")
        bounds = (float(bounds[0]), float(bounds[1]))
    thresholds = parity.ParityThresholds(
        min_agreement=float(pc.get("min_agreement", 0.999)),
        max_abs_diff=float(pc.get("max_abs_diff", 1e-3)),
    )
    device = _device()
    models = [("original", original, scores_before)] + (
        [("repaired", repaired, scores_after)] if repaired is not None else []
    )
    parity_n = int(pc.get("samples", 1000))
    if parity_n < 1:
        raise InvalidSettingError(f"settings.parity.samples must be ≥ 1, got {parity_n}")
    parity_idx = np.sort(np.random.default_rng(seed).permutation(len(x))[: min(parity_n, len(x))])
    modules = {}
    reports = {}
    for name, model, scores in models:
        module, reason = parity.import_to_torch(model)
        if module is None:
            report = parity.ParityReport(False, math.nan, math.nan, 0, reason)
        else:
            module.to(device)
            for p in module.parameters():
                p.requires_grad_(False)  # gradients w.r.t. inputs only: faster attacks
            report = parity.check_parity(module, scores[parity_idx], x[parity_idx], thresholds, device=device)
        reports[name] = report.as_dict()
        outcome.metrics[f"parity_max_abs_diff_{name}"] = report.max_abs_diff
        outcome.metrics[f"parity_agreement_{name}"] = report.argmax_agreement
        if not report.passed:
            outcome.details["parity"] = reports
            outcome.notes["robustness"] = f"unsupported: {name} model fails the parity gate: {report.reason}"
            return
        modules[name] = (
            module,
            scoring.output_kind(model, scores[parity_idx], rc.get("output_kind", "auto")),
        )
    outcome.details["parity"] = reports
    predictions = [scores_before.argmax(axis=1)] + ([scores_after.argmax(axis=1)] if repaired is not None else [])
    if "indices" in rc:
        idx = _given_indices(rc["indices"], len(x))
        wrong = int(sum((p[idx] != y[idx]).sum() for p in predictions))
        if wrong:
            # Counted as attack successes; the caller chose them as correct for every model.
            outcome.notes["robustness"] = f"{wrong} given input(s) are misclassified before the attack"
    else:
        idx = robustness.common_correct_indices(y, predictions, int(rc.get("samples", 500)), seed)
    if len(idx) == 0:
        outcome.notes["robustness"] = "unsupported: no test input is classified correctly by every model"
        return
    asr = {}
    for name, predictor in (("original", pred_orig), ("repaired", pred_rep)):
        module, kind = modules.get(name, modules["original"])
        if name == "repaired" and repaired is None:
            asr[name] = asr["original"]
            continue
        common = {
            "bounds": bounds,
            "output_kind": kind,
            "batch_size": int(rc.get("batch_size", 256)),
            "device": device,
        }
        if attack == "pgd":
            adv = robustness.pgd_linf(
                module,
                x[idx],
                y[idx],
                eps,
                steps=int(rc.get("steps", robustness.DEFAULT_STEPS)),
                rel_stepsize=float(rc.get("rel_stepsize", robustness.FOOLBOX_REL_STEPSIZE)),
                abs_stepsize=float(rc["abs_stepsize"]) if "abs_stepsize" in rc else None,
                random_start=bool(rc.get("random_start", True)),
                seed=seed,
                **common,
            )
        else:
            adv = robustness.fgsm(module, x[idx], y[idx], eps, **common)
        # The verdict is onnxruntime's: the ONNX model is what was repaired and is deployed.
        asr[name] = robustness.attack_success_rate(y[idx], predictor.predict(adv))
    outcome.metrics.update(
        {
            "asr_before": asr["original"],
            "asr_after": asr["repaired"],
            "dasr": asr["repaired"] - asr["original"],
            "robustness_samples": float(len(idx)),
            "eps": eps,
        }
    )
