"""A small study the chaos tests drive through the real Scheduler and Ledger: one tiny fault
(4-feature Gaussian blobs, a dense classifier) uploaded to a store, N jobs over seeds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from fixbench.arrays import npz_bytes
from fixbench.artifacts.client import ArtifactClient
from fixbench.faults.bundle import Fault
from orchestrator.jobs import make_job
from orchestrator.ledger import Ledger
from orchestrator.scheduler import Scheduler
from orchestrator.spec import StudySpec


def tiny_fault(client: ArtifactClient, seed: int = 0) -> Fault:
    """A fault whose model and splits live in the store behind `client`."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 60)
    x = rng.normal(0, 1, (60, 4)).astype(np.float32)
    x[np.arange(60), y] += 3.0
    w = np.eye(4, 3, dtype=np.float32)
    w[3, 0] = 2.0  # the fault
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["logits"]), helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(3, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    split = npz_bytes({"x": x, "y": y.astype(np.int64)})
    digests = {}
    for name, data in [("model", model.SerializeToString()), ("train", split), ("valid", split), ("repair", split),
                       ("test", split)]:
        d = client.upload_bytes(data)
        digests[name] = {"sha256": d.sha256, "size_bytes": d.size_bytes}
    return Fault(id="blobs-dense", family="misclassification", dataset="blobs", architecture="dense",
                 description="chaos test fault", input_shape=[4], num_classes=3, seed=seed, train_seconds=1.0,
                 digests=digests)


@dataclass
class Figures:
    """Counts from the ledger after a run; `lost` and `duplicated` must be 0 in every scenario."""

    jobs: int
    done: int
    lost: int
    duplicated: int
    statuses: dict[str, int]
    infra_errors: int
    rows: list[dict]


def study_spec(approach: str, seeds: int, wall_seconds: float = 5.0, attempts: int = 3, total: int = 2,
               backoff: float = 0.0, **approach_fields) -> StudySpec:
    return StudySpec.model_validate({
        "name": "chaos", "suite": "quick", "seeds": list(range(seeds)),
        "approaches": [{"name": approach, "concurrency": total, **approach_fields}],
        "budget": {"wall_seconds": wall_seconds}, "concurrency": {"total": total},
        "retry": {"attempts": attempts, "backoff_seconds": backoff},
    })


def run_jobs(spec: StudySpec, fault: Fault, ledger_path: Path, approach_address: str, evaluator_address: str,
             exit_cause=None) -> Figures:
    """Runs every (approach, seed) job once through the Scheduler and counts the ledger."""
    ledger = Ledger(ledger_path)
    try:
        approach = spec.approaches[0]
        jobs = [make_job(approach, "1.0.0", fault, seed, spec) for seed in spec.seeds]
        for job in jobs:
            ledger.add(job.key, spec.name, approach.name, job.version, fault.id, job.seed, approach.params)
        scheduler = Scheduler(spec, ledger, {approach.name: [approach_address]}, evaluator_address,
                              exit_cause=exit_cause)
        asyncio.run(scheduler.run([j for j in jobs if ledger.state(j.key) != "done"]))
        rows = list(ledger.rows(spec.name))
    finally:
        ledger.close()
    keys = [r["key"] for r in rows]
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"] or "none"] = statuses.get(r["status"] or "none", 0) + 1
    expected = {j.key for j in jobs}
    return Figures(jobs=len(jobs), done=sum(r["state"] == "done" for r in rows),
                   # lost: a job with no row, or one left "running" that no later run would take
                   lost=len(expected - {r["key"] for r in rows if r["state"] in ("done", "pending")}),
                   duplicated=len(keys) - len(set(keys)), statuses=statuses,
                   infra_errors=sum(r["infra_errors"] for r in rows), rows=rows)
