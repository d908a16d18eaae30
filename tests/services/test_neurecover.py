"""NeuRecover: the training-history localisation finds a weight that the last epoch changed on
purpose, the particle swarm improves its own fitness on the repair inputs, runs are
deterministic, jobs without a training history are UNADAPTABLE with the reason (Check and the
real service through the conformance suite), and a job with a history is repaired end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest
from google.protobuf import struct_pb2

from fixbench.conformance import run_service_conformance
from fixbench.onnxio import Predictor
from fixbench.sdk.context import RepairContext
from fixbench.v1 import repair_pb2
from fixbench.v1.common_pb2 import Digest
from tests.services.loading import service_module

SERVICES = Path(__file__).resolve().parents[2] / "services"
sys.path.insert(0, str(SERVICES / "neurecover"))
from neurecover_repair import NeuRecoverConfig, NoHistoryError, localise, repair, unadaptable_reason  # noqa: E402

from tests.services.planted import blobs, linear_net, planted_net  # noqa: E402

FAST = dict(particles=20, iterations=30)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data():
    """Blobs the previous epoch's (clean) model gets all right, so that every failure of the
    faulty model is a regression."""
    x, y = blobs(400)
    ok = Predictor(planted_net(3, corruption=0.0).SerializeToString(), threads=1).predict(x) == y
    return x[ok], y[ok]


@pytest.mark.parametrize("planted", [3, 5])
def test_history_localisation_finds_the_weight_the_last_epoch_broke(planted):
    x, y = _data()
    before, after = planted_net(planted, corruption=0.0), planted_net(planted)
    localised, info = localise(after, before, x, y, NeuRecoverConfig())
    assert info["regressed"] > 0 and info["improved"] == 0
    top = localised[0]
    assert (top.layer.weight, top.index) == ("w2", (planted, 0)) and top.score == pytest.approx(4.0)
    # The first layer did not change in the last epoch: nothing of it is localised.
    assert all(w.layer.weight == "w2" for w in localised)


def test_the_swarm_improves_its_fitness_and_the_model_fixes_regressions():
    x, y = _data()
    model = planted_net(3)
    result = repair(model, [(1, planted_net(3, corruption=0.0))], x, y, NeuRecoverConfig(**FAST), seed=0)
    m = result.metrics
    assert m["fitness_after"] > m["fitness_before"] and m["patched"] > 0
    failing_before = (Predictor(model.SerializeToString(), threads=1).predict(x) != y).sum()
    failing_after = (Predictor(result.model, threads=1).predict(x) != y).sum()
    assert failing_after < failing_before


def test_same_seed_same_repair():
    x, y = _data()
    history = [(1, planted_net(3, corruption=0.0))]
    a = repair(planted_net(3), history, x, y, NeuRecoverConfig(**FAST), seed=5)
    b = repair(planted_net(3), history, x, y, NeuRecoverConfig(**FAST), seed=5)
    assert a.model == b.model and a.metrics == b.metrics


def test_without_history_it_is_unadaptable_with_the_reason():
    reason = unadaptable_reason(planted_net(3), 0)
    assert "no training history" in reason and "pretrained" in reason
    assert unadaptable_reason(planted_net(3), 2) is None
    assert "no dense" in unadaptable_reason(_no_dense(), 1)
    with pytest.raises(NoHistoryError, match="no training history"):
        repair(planted_net(3), [], *_data(), NeuRecoverConfig(**FAST), seed=0)


def _no_dense() -> onnx.ModelProto:
    m = linear_net()
    m.graph.node[0].op_type = "Add"  # x + w: no dense layer left
    return m


def _job(model: bytes, history: list[tuple[int, bytes]], params: dict) -> tuple[repair_pb2.RepairJob, dict]:
    blobs_by_digest = {}

    def digest(data: bytes) -> Digest:
        import hashlib

        d = Digest(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
        blobs_by_digest[d.sha256] = data
        return d

    from fixbench.arrays import npz_bytes

    x, y = _data()
    job = repair_pb2.RepairJob(job_id="j", fault_id="planted", fault_family="misclassification", model=digest(model),
                               data=repair_pb2.DatasetRef(name="blobs", repair=digest(npz_bytes({"x": x, "y": y})),
                                                          input_shape=[4], num_classes=3), seed=1)
    for epoch, data in history:
        job.history.add(epoch=epoch, model=digest(data))
    job.params.CopyFrom(struct_pb2.Struct())
    job.params.update(params)
    return job, blobs_by_digest


def test_the_service_class_reads_the_history_from_the_job_and_checks_it():
    NeuRecover = service_module("neurecover").NeuRecover

    model = planted_net(3).SerializeToString()
    job, blobs_by_digest = _job(model, [(1, planted_net(3, corruption=0.0).SerializeToString())], FAST)
    params = NeuRecover.resolve_params(FAST)
    ctx = RepairContext(job, params, lambda d: blobs_by_digest[d.sha256], None)
    approach = NeuRecover()
    assert approach.check(ctx) is None
    outcome = approach.repair(ctx)
    assert outcome.model is not None and outcome.diagnosis.weights[0].tensor == "w2"
    assert list(outcome.diagnosis.weights[0].index) == [3, 0]
    bare, blobs_bare = _job(model, [], FAST)
    assert "no training history" in approach.check(RepairContext(bare, params, lambda d: blobs_bare[d.sha256], None))


def test_neurecover_conforms_and_refuses_the_historyless_fixture():
    report = run_service_conformance(SERVICES / "neurecover", params=FAST)
    failures = report.failures
    assert not failures, f"{report.summary()}: {[(c.name, c.detail) for c in failures]}\n{report.log_tail}"
    assert report.status_of("describe") == "pass"
    assert "no training history" in report.log_tail + " ".join(c.detail for c in report.checks)
