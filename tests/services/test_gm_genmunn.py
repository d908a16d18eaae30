"""GM (GenMuNN): the weight ranking finds the weight corrupted on purpose, the GA raises its own
fitness on the repair inputs, runs repeat for a seed, and the service conforms."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "services" / "gm-genmunn"
for path in (str(SERVICE), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

import genmunn as core  # noqa: E402

from fixbench.arrays import load_split  # noqa: E402
from fixbench.conformance.fixture import FEATURES, build_fixture  # noqa: E402
from fixbench.sdk.initializers import initializer_names  # noqa: E402

torch = pytest.importorskip("torch")


def _approach():
    """The service's approach.py under its own module name (every service has one)."""
    name = "gm_genmunn_approach"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SERVICE / "approach.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _fixture():
    from fixbench.onnxio.torch_bridge import onnx_to_torch

    fx = build_fixture(0)
    model = onnx.load_from_string(fx.model)
    x, y = load_split(fx.splits["repair"])[:2]
    return model, onnx_to_torch(model), x, y


def _search(module, x, y, seed):
    targets = core.rank_weights(module, x, y, probabilities=True, weights_per_layer=8)
    genome = core.Genome(module, targets)

    def fitness(g):
        genome.apply(g)
        return core.repair_fitness(module, x, y, probabilities=True)

    result = core.genetic_search(genome, fitness, np.random.default_rng(seed), population=10, generations=12,
                                 mutation_rate=0.3, mutation_scale=1.0, crossover_rate=0.7, tournament=3, elite=2,
                                 patience=12, should_stop=lambda: False, report=lambda g, b: None)
    return targets, genome, result


def test_ranking_puts_the_corrupted_weight_first_in_its_layer():
    model, module, x, y = _fixture()
    names = initializer_names(model, core.weight_tensors(module))
    targets = core.rank_weights(module, x, y, probabilities=True, weights_per_layer=3)
    last = [t for t in targets if names[t.tensor] == "fc2.weight"]
    # The fixture adds the corruption to the weight from hidden unit F-1 to class 0.
    assert last and last[0].index == (FEATURES - 1, 0) and last[0].score == 1.0
    assert all(t.score <= 1.0 for t in targets)


def test_genetic_search_improves_its_fitness_and_repeats_for_a_seed():
    _, module, x, y = _fixture()
    targets, genome, result = _search(module, x, y, seed=3)
    assert result.fitness > result.initial_fitness
    assert result.history == sorted(result.history)  # elitism: the best never gets worse
    # Applying the best genome reproduces its fitness.
    genome.apply(result.genome)
    assert core.repair_fitness(module, x, y, probabilities=True) == pytest.approx(result.fitness)
    _, module2, _, _ = _fixture()
    _, _, again = _search(module2, x, y, seed=3)
    np.testing.assert_array_equal(result.genome, again.genome)


def test_bad_parameters_are_refused():
    approach = _approach()
    from fixbench.sdk import ParamError

    with pytest.raises(ParamError, match="preset"):
        approach.GenMuNN.resolve_params({"preset": "huge"})
    with pytest.raises(ParamError, match="elite"):
        approach.GenMuNN.resolve_params({"elite": 16})
    paper = approach.GenMuNN.resolve_params({"preset": "paper", "generations": 3})
    assert paper["population"] == 50 and paper["generations"] == 3  # given values beat the preset


def test_service_conforms_and_repairs_the_fixture():
    from fixbench.conformance import run_service_conformance

    report = run_service_conformance(SERVICE, params={"population": 8, "generations": 6, "weights_per_layer": 8})
    assert not report.failures, [(c.name, c.detail) for c in report.failures]
    assert "then REPAIRED" in report.by_name()["fix-stream"].detail
