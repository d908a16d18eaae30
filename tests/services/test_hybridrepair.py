"""hybridrepair (Li, Chen, Xu's annotation-efficient repair): the budget goes to the unsmoothest
region and its oracle label reaches exactly the planted neighbours, the unlabeled-term weights,
the test-time-augmentation unsmoothness on a known model, Check, determinism, and the
conformance suite."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from fixbench.artifacts.digest import digest_of_bytes
from fixbench.conformance import run_service_conformance
from fixbench.conformance.fixture import build_fixture
from fixbench.sdk.context import RepairContext
from fixbench.v1 import repair_pb2

ROOT = Path(__file__).resolve().parents[2]
SERVICE_DIR = ROOT / "services" / "hybridrepair"


def _load_approach():
    spec = importlib.util.spec_from_file_location("hybridrepair_approach", SERVICE_DIR / "approach.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


approach = _load_approach()
core = sys.modules["hr_core"]
HybridRepair = approach.HybridRepair


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _blobs(rng):
    """Three well-separated blobs of 20 feature vectors each, true labels 0 / 1 / 2."""
    centres = np.array([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]])
    x = np.concatenate([c + rng.normal(0, 0.3, (20, 3)) for c in centres])
    return x, np.repeat([0, 1, 2], 20)


def test_label_propagation_labels_the_planted_neighbours():
    latents, truth = _blobs(np.random.default_rng(0))
    # Blob 1 is where the model fails: it is the unsmooth region.
    unsmooth = np.where(truth == 1, 0.9, 0.1)
    regions, centres = core.cluster_regions(latents, budget=1, min_samples=3, avg_cluster_size=20, seed=0)
    assert sorted(len(r) for r in regions) == [20, 20, 20]
    assert all(len(set(truth[r])) == 1 for r in regions)
    asked_log = []

    def oracle(i):
        asked_log.append(i)
        return truth[i]

    asked, members, labels = core.label_regions(regions, centres, unsmooth, budget=1, oracle=oracle)
    assert len(asked) == 1 == len(asked_log)  # the budget: one label
    assert truth[asked[0]] == 1  # spent on the unsmooth region's centre
    assert sorted(members) == list(np.flatnonzero(truth == 1))  # reaches every planted neighbour
    assert np.all(labels == 1)  # and gives them the oracle's (correct) label

    w = core.unlabeled_weights(np.array([0.1, 0.5, 0.9, 0.95]), tau=0.6, labelled=np.array([3]))
    assert w == pytest.approx([0.9, 0.5, 0.0, 1.0])


def test_unsmoothness_of_a_known_model():
    # A model whose prediction does not depend on the input: every input equally (un)smooth.
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([1.0, 0.0]))
    u, mean_p = core.tta_unsmoothness(model, np.random.default_rng(0).normal(size=(10, 3)), False, 3,
                                      torch.Generator().manual_seed(0))
    assert u == pytest.approx(np.ones(10))
    assert mean_p[:, 0] == pytest.approx(np.full(10, np.exp(1) / (np.exp(1) + 1)))


def _context(model_bytes, splits, input_shape, num_classes, params=None, seed=0):
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
    return RepairContext(job, HybridRepair.resolve_params(params or {}), lambda d: blobs[d.sha256], 120.0)


# The fixture is a 2-layer network on 4 features: a larger step than the default reaches a fix in 2 epochs.
SMALL = {"epochs": 2, "tta_iters": 2, "train_iters": 1, "budget": 0.05, "learning_rate": 0.2}


def test_same_seed_same_repair():
    fixture = build_fixture()
    runs = [HybridRepair().repair(_context(fixture.model, fixture.splits, fixture.input_shape, fixture.num_classes, SMALL))
            for _ in range(2)]
    assert runs[0].model is not None and runs[0].model == runs[1].model
    assert runs[0].metrics == runs[1].metrics
    assert runs[0].metrics["labels_asked"] == round(0.05 * 640)  # 5 % of train + repair (480 + 160)


def test_check_refuses_a_model_without_a_dense_layer():
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["input"], ["output"], axis=-1)], "no_dense",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    fixture = build_fixture()
    reason = HybridRepair().check(_context(model.SerializeToString(), fixture.splits, (4,), 4))
    assert reason and "dense" in reason


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="budget"):
        HybridRepair.resolve_params({"budget": 0.0})
    with pytest.raises(ValueError, match="tau"):
        HybridRepair.resolve_params({"tau": 2.0})


def test_readme_carries_the_generated_parameter_table():
    readme = (SERVICE_DIR / "README.md").read_text(encoding="utf-8")
    assert HybridRepair.parameter_table() in readme


@pytest.mark.slow  # starts the service as a process and runs the whole suite: minutes on a loaded 2-core machine
def test_service_conforms():
    report = run_service_conformance(SERVICE_DIR, params=SMALL)
    failures = report.failures
    assert not failures, f"{report.summary()}: {[(c.name, c.detail) for c in failures]}\n{report.log_tail}"
    assert report.status_of("describe") == "pass" and report.status_of("fix-stream") == "pass"
    assert "then REPAIRED" in report.by_name()["fix-stream"].detail
