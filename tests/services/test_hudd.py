"""hudd (Fahmy et al.'s heatmap-based debugging): the clustering separates two planted root
causes on a tiny model, the WICD / knee / assignment / balancing steps on known inputs, the
logits view LRP runs on, Check, determinism, and the conformance suite."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from fixbench.artifacts.digest import digest_of_bytes
from fixbench.conformance import run_service_conformance
from fixbench.conformance.fixture import build_fixture
from fixbench.onnxio import load_model
from fixbench.onnxio.torch_bridge import onnx_to_torch
from fixbench.sdk.context import RepairContext
from fixbench.v1 import repair_pb2
from tests.services.loading import service_module

ROOT = Path(__file__).resolve().parents[2]
SERVICE_DIR = ROOT / "services" / "hudd"


def _load_approach():
    return service_module("hudd")


approach = _load_approach()
core = sys.modules["hudd_core"]
Hudd = approach.Hudd


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- two planted root causes ----------------------------------------------------------------
def _two_cause_model():
    """Hidden units 0-1 read features 0-2 only, units 2-3 read features 3-5 only; the output
    layer mixes them. An error caused by features 0-2 puts its relevance on units 0-1."""
    torch.manual_seed(0)
    first = torch.nn.Linear(6, 4)
    with torch.no_grad():
        first.weight.zero_()
        first.weight[0:2, 0:3] = 1.0
        first.weight[2:4, 3:6] = 1.0
        first.bias.zero_()
    model = torch.nn.Sequential(first, torch.nn.ReLU(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[1.0, 0.5, 0.2, 0.1], [0.3, 0.2, 1.0, 0.6], [0.5, 0.5, 0.5, 0.5]]))
        model[2].bias.zero_()
    return torch.fx.symbolic_trace(model).eval()


def _planted_inputs(rng, n_per_cause):
    a = np.abs(rng.normal(0, 0.1, (n_per_cause, 6)))
    a[:, 0:3] += rng.uniform(1.0, 2.0, (n_per_cause, 1))
    b = np.abs(rng.normal(0, 0.1, (n_per_cause, 6)))
    b[:, 3:6] += rng.uniform(1.0, 2.0, (n_per_cause, 1))
    return np.concatenate([a, b]).astype(np.float32), np.repeat([0, 1], n_per_cause)


def test_clustering_separates_two_planted_root_causes():
    model = core.logits_module(_two_cause_model())
    x, cause = _planted_inputs(np.random.default_rng(0), 20)
    layer = core.candidate_layers(model)
    assert layer == ["0"]  # the output layer is not a candidate
    maps, _ = core.layer_heatmaps(model, "0", x)
    assert maps.shape == (40, 4)
    # Relevance sits on the hidden units of the input's own cause.
    assert np.all(maps[cause == 0][:, :2].sum(1) > maps[cause == 0][:, 2:].sum(1))
    assert np.all(maps[cause == 1][:, 2:].sum(1) > maps[cause == 1][:, :2].sum(1))
    clustering = core.cluster_heatmaps(maps, max_clusters=10)
    assert 2 <= clustering.k <= 10 and len(clustering.labels) == 40
    for c in range(clustering.k):
        members = cause[clustering.labels == c]
        assert len(set(members)) == 1, f"cluster {c} mixes both root causes"
    assert {cause[clustering.labels == c][0] for c in range(clustering.k)} == {0, 1}

    # New inputs of cause A fall inside cause-A clusters; a far-off input falls in none.
    pool, pool_cause = _planted_inputs(np.random.default_rng(1), 5)
    far = np.full((1, 6), 40.0, np.float32)
    pool_maps, _ = core.layer_heatmaps(model, "0", np.concatenate([pool, far]))
    assigned, dist = core.assign_to_clusters(pool_maps, maps, clustering.labels)
    cluster_cause = {c: cause[clustering.labels == c][0] for c in range(clustering.k)}
    inside = assigned[:-1] >= 0
    assert inside.sum() >= 6
    assert all(cluster_cause[a] == pc for a, pc in zip(assigned[:-1][inside], pool_cause[inside], strict=True))
    assert assigned[-1] == -1
    selected = core.unsafe_set(assigned, dist, per_cluster=2)
    for c, idx in selected.items():
        assert len(idx) <= 2 and np.all(assigned[idx] == c)
        assert list(dist[idx]) == sorted(dist[idx])  # nearest first


def test_wicd_knee_and_balancing_on_known_inputs():
    dist = np.array([[0, 2, 9, 9], [2, 0, 9, 9], [9, 9, 0, 4], [9, 9, 4, 0]], float)
    # (2 * 2/4 + 4 * 2/4) / 2 clusters
    assert core.wicd(dist, np.array([0, 0, 1, 1])) == pytest.approx(1.5)
    assert core.wicd(dist, np.array([0, 1, 2, 3])) == 0.0
    assert core.knee(np.arange(5), np.array([0.0, 0.8, 0.9, 0.95, 1.0])) == 1
    bag = core.bootstrap_balance({0: np.array([1, 2, 3]), 1: np.array([7])}, np.random.default_rng(0))
    assert len(bag) == 6 and sorted(bag[:3]) == [1, 2, 3] and set(bag[3:]) == {7}


def test_logits_view_drops_the_softmax():
    model = onnx_to_torch(load_model(build_fixture().model))
    logits = core.logits_module(model)
    x = torch.randn(8, 4)
    with torch.no_grad():
        assert torch.allclose(torch.softmax(logits(x), dim=1), model(x), atol=1e-6)
        assert not torch.allclose(logits(x), model(x))


# ---- the approach, called directly ---------------------------------------------------------
def _context(model_bytes: bytes, splits: dict[str, bytes], input_shape, num_classes, params=None, seed=0):
    blobs, refs = {}, {}
    for name, data in [("model", model_bytes)] + list(splits.items()):
        digest = digest_of_bytes(data)
        blobs[digest.sha256] = data
        refs[name] = digest
    job = repair_pb2.RepairJob(
        job_id="direct", fault_family="misclassification", model=refs["model"], seed=seed,
        data=repair_pb2.DatasetRef(name="fixture", train=refs["train"], valid=refs["valid"], repair=refs["repair"],
                                   input_shape=list(input_shape), num_classes=num_classes),
    )
    job.params.update(params or {})
    return RepairContext(job, Hudd.resolve_params(params or {}), lambda d: blobs[d.sha256], 120.0)


SMALL = {"epochs": 2, "unsafe_per_cluster": 10, "max_failures": 40}


def test_same_seed_same_repair():
    fixture = build_fixture()
    runs = [Hudd().repair(_context(fixture.model, fixture.splits, fixture.input_shape, fixture.num_classes, SMALL))
            for _ in range(2)]
    assert runs[0].model is not None
    assert runs[0].model == runs[1].model
    assert runs[0].diagnosis.summary == runs[1].diagnosis.summary
    assert runs[0].diagnosis.layers and runs[0].diagnosis.neurons
    assert runs[0].metrics["clusters"] >= 1


def test_check_refuses_a_model_without_layers_to_explain():
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["input"], ["output"], axis=-1)], "no_layers",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    fixture = build_fixture()
    ctx = _context(model.SerializeToString(), fixture.splits, (4,), 4)
    reason = Hudd().check(ctx)
    assert reason and "Conv or dense" in reason


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="preset"):
        Hudd.resolve_params({"preset": "fast"})
    with pytest.raises(ValueError, match="pool"):
        Hudd.resolve_params({"pool": "test"})


def test_readme_carries_the_generated_parameter_table():
    readme = (SERVICE_DIR / "README.md").read_text(encoding="utf-8")
    assert Hudd.parameter_table() in readme


@pytest.mark.slow  # starts the service as a process and runs the whole suite: minutes on a loaded 2-core machine
def test_service_conforms():
    report = run_service_conformance(SERVICE_DIR, params=SMALL)
    failures = report.failures
    assert not failures, f"{report.summary()}: {[(c.name, c.detail) for c in failures]}\n{report.log_tail}"
    assert report.status_of("describe") == "pass" and report.status_of("fix-stream") == "pass"
    assert "then REPAIRED" in report.by_name()["fix-stream"].detail



def test_overflowed_heatmaps_are_assigned_to_no_cluster():
    # Deep BatchNorm / concat stacks can overflow LRP relevance: such a heatmap has no
    # distance to the clusters, so it joins none instead of failing the distance computation.
    maps = np.array([[1.0, 0.0], [1.1, 0.0], [0.0, 1.0], [0.0, 1.1]])
    labels = np.array([0, 0, 1, 1])
    pool = np.array([[1.05, 0.0], [np.inf, 0.0], [0.0, np.nan], [0.0, 1.05]])
    assert list(core.heatmaps_finite(pool)) == [True, False, False, True]
    assigned, dist = core.assign_to_clusters(pool, maps, labels)
    assert list(assigned) == [0, -1, -1, 1]
    assert np.isinf(dist[1]) and np.isinf(dist[2]) and np.isfinite(dist[[0, 3]]).all()
