"""INNER: the probes' routing score ranks a hidden neuron corrupted on purpose first, the
optimisation of the fault neurons fixes failing repair inputs, runs are deterministic, Check
refuses models without a hidden dense layer, and the real service passes the conformance suite."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from fixbench.conformance import run_service_conformance
from fixbench.onnxio import Predictor
from fixbench.sdk.onnx_split import initializer

SERVICES = Path(__file__).resolve().parents[2] / "services"
sys.path.insert(0, str(SERVICES / "inner"))
from inner_repair import InnerConfig, repair, unadaptable_reason  # noqa: E402

from tests.services.planted import blobs, linear_net, planted_net  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("planted", [3, 5])
def test_probe_routing_ranks_the_planted_neuron_first(planted):
    x, y = blobs()
    result = repair(planted_net(planted), x, y, InnerConfig(epochs=1), seed=0)
    assert result.ranking[0].index == planted, [(n.index, n.score) for n in result.ranking[:3]]
    assert result.chosen[0].index == planted and result.chosen[0].score > 0
    assert min(result.probe_accuracy.values()) > 0.9


def test_optimising_the_fault_neurons_fixes_repair_inputs_and_touches_only_them():
    x, y = blobs()
    model = planted_net(3)
    before = Predictor(model.SerializeToString(), threads=1).predict(x) != y
    result = repair(model, x, y, InnerConfig(epochs=60, learning_rate=0.05), seed=0)
    assert result.model is not None and result.metrics["fixed"] > 0
    after = Predictor(result.model, threads=1).predict(x) != y
    assert after.sum() < before.sum()
    # Only the fault neurons' rows of the reading weight (MatMul layout: in x out) changed.
    changed = np.flatnonzero(np.abs(initializer(onnx.load_from_string(result.model), "w2")
                                    - initializer(model, "w2")).sum(axis=1) > 0)
    assert set(changed) <= {n.index for n in result.chosen} and 3 in changed


def test_same_seed_same_repair():
    x, y = blobs()
    a = repair(planted_net(3), x, y, InnerConfig(epochs=20), seed=3)
    b = repair(planted_net(3), x, y, InnerConfig(epochs=20), seed=3)
    assert a.model == b.model and [n.index for n in a.chosen] == [n.index for n in b.chosen]


def test_no_hidden_dense_layer_is_unadaptable():
    assert "no dense" in unadaptable_reason(linear_net(), 3)
    assert unadaptable_reason(planted_net(3), 3) is None


def test_inner_conforms():
    report = run_service_conformance(SERVICES / "inner", params={"epochs": 30, "learning_rate": 0.05})
    failures = report.failures
    assert not failures, f"{report.summary()}: {[(c.name, c.detail) for c in failures]}\n{report.log_tail}"
    assert "then REPAIRED" in report.by_name()["fix-stream"].detail
