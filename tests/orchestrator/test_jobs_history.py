"""A fault's training history reaches the job: RepairJob.history by digest, in the job key
only when the fault keeps one (older jobs keep their keys), and through ctx.history()."""

from __future__ import annotations

from fixbench.faults.bundle import Fault
from fixbench.sdk.context import RepairContext
from orchestrator.jobs import make_job
from orchestrator.spec import ApproachSpec, StudySpec


def _fault(history: list[dict]) -> Fault:
    digests = {n: {"sha256": n * 8, "size_bytes": 1} for n in ("model", "train", "valid", "repair", "test")}
    return Fault(id="f", family="misclassification", dataset="d", architecture="a", description="",
                 input_shape=[4], num_classes=3, seed=0, train_seconds=1.0, digests=digests, history=history)


def test_history_is_listed_by_digest_and_keys_the_job():
    spec = StudySpec.model_validate({"name": "s", "suite": "quick", "seeds": [0], "budget": {"wall_seconds": 60},
                                    "approaches": [{"name": "noop"}]})
    approach = ApproachSpec(name="noop")
    history = [{"epoch": 1, "file": "history/epoch-1.onnx", "sha256": "a" * 64, "size_bytes": 3},
               {"epoch": 2, "file": "history/epoch-2.onnx", "sha256": "b" * 64, "size_bytes": 4}]
    with_history = make_job(approach, "1", _fault(history), 0, spec)
    without = make_job(approach, "1", _fault([]), 0, spec)
    assert [(c.epoch, c.model.sha256, c.model.size_bytes) for c in with_history.message.history] == [
        (1, "a" * 64, 3), (2, "b" * 64, 4)]
    assert not without.message.history and with_history.key != without.key

    blobs = {"a" * 64: b"one", "b" * 64: b"four"}
    ctx = RepairContext(with_history.message, {}, lambda d: blobs[d.sha256], None)
    assert ctx.history() == [(1, b"one"), (2, b"four")]
    assert RepairContext(without.message, {}, lambda d: b"", None).history() == []
