"""CARE: causal localisation finds a hidden neuron corrupted on purpose, the particle swarm
improves its own cost on the repair inputs, runs are deterministic, Check refuses models
without a hidden dense layer, and the real service passes the conformance suite."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fixbench.conformance import run_service_conformance
from fixbench.onnxio import Predictor

SERVICES = Path(__file__).resolve().parents[2] / "services"
sys.path.insert(0, str(SERVICES / "care"))
from care_repair import CareConfig, repair, unadaptable_reason  # noqa: E402

from tests.services.planted import blobs as _blobs  # noqa: E402
from tests.services.planted import linear_net  # noqa: E402
from tests.services.planted import planted_net as _net  # noqa: E402

FAST = dict(iterations=30)


@pytest.mark.parametrize("planted", [3, 5])
def test_causal_analysis_ranks_the_planted_neuron_first(planted):
    x, y = _blobs()
    result = repair(_net(planted), x, y, CareConfig(**FAST), seed=0)
    assert result.ranking[0][0] == planted, result.ranking[:3]
    assert result.chosen[0] == planted


def test_the_swarm_improves_its_cost_and_the_model_fixes_repair_inputs():
    x, y = _blobs()
    model = _net(3)
    before = Predictor(model.SerializeToString(), threads=1).predict(x) != y
    result = repair(model, x, y, CareConfig(**FAST), seed=0)
    m = result.metrics
    assert m["cost_after"] < m["cost_before"] and m["fixed"] > 0
    after = Predictor(result.model, threads=1).predict(x) != y
    # The folded factors reproduce the search's count exactly on the fixed failing inputs.
    assert int((before & ~after).sum()) == int(m["fixed"])
    assert after.sum() < before.sum()


def test_same_seed_same_repair():
    x, y = _blobs()
    a = repair(_net(3), x, y, CareConfig(**FAST), seed=7)
    b = repair(_net(3), x, y, CareConfig(**FAST), seed=7)
    assert np.array_equal(a.factors, b.factors) and a.model == b.model


def test_no_hidden_dense_layer_is_unadaptable():
    reason = unadaptable_reason(linear_net(), 1)
    assert reason and "no dense" in reason
    assert "only 1" in unadaptable_reason(_net(3), 2)
    assert unadaptable_reason(_net(3), 1) is None


def test_care_conforms():
    report = run_service_conformance(SERVICES / "care", params={"iterations": 20})
    failures = report.failures
    assert not failures, f"{report.summary()}: {[(c.name, c.detail) for c in failures]}\n{report.log_tail}"
    assert "then REPAIRED" in report.by_name()["fix-stream"].detail
