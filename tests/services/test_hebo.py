"""hebo (HEBO over the Kim et al. recipe space): the space mapping, the seeded proposer, a
repair of a learning-rate fault in which HEBO's model-based suggestions beat its first trial,
Check, and the conformance suite against the real service."""

from __future__ import annotations

import importlib
import math

import pytest

pytest.importorskip("hebo", reason="hebo is installed with --no-deps (see services/hebo/README.md)")

from fixbench.conformance import run_service_conformance  # noqa: E402
from fixbench.conformance.suite import SuiteSettings  # noqa: E402
from fixbench.sdk.trials import TrialResult, recipe_dimensions, recipe_from_point  # noqa: E402
from fixbench.zoo import Recipe, default_recipe  # noqa: E402
from tests.services._recipe_fault import SERVICES, digits_fault, direct_context, load_service  # noqa: E402

approach = load_service("hebo", "hebo_approach")
hebo_search = importlib.import_module("hebo_search")  # approach.py put its folder on sys.path
Hebo = approach.Hebo
SMALL = {"suggestions": 2, "initial_points": 2, "gp_epochs": 20, "acq_population": 20, "acq_iterations": 10}


def test_the_design_space_is_the_kim_space():
    names = [d["name"] for d in hebo_search.design_space_config()]
    assert names == list(recipe_dimensions())
    lr = next(d for d in hebo_search.design_space_config() if d["name"] == "learning_rate")
    assert (lr["type"], lr["lb"], lr["ub"]) == ("pow", 1e-6, 10.0)
    base = default_recipe("mlp").replace(epochs=10)
    point = {"loss": "kld", "optimizer": "adam", "learning_rate": 0.01, "activation": "tanh",
             "initializer": "zeros", "batch_size": 32, "epochs": 1.2, "layers": 2,
             "units_1": 20, "units_2": 30, "units_3": 40, "units_4": 50}
    recipe = recipe_from_point(base, point)
    assert isinstance(recipe, Recipe) and recipe.hidden_units == (20, 30) and recipe.epochs == 12
    assert recipe.architecture == base.architecture and recipe.dropout == base.dropout


def _fake_round(proposer, start):
    specs = proposer.propose(start)
    # A score peaked at lr = 1e-3, so that the model has something to learn.
    return specs, [TrialResult(s, max(0.0, 1 - abs(math.log10(s.config["recipe"]["learning_rate"]) + 3) / 9), "ok", 0.0)
                   for s in specs]


def test_the_proposer_is_a_function_of_its_seed():
    base = default_recipe("mlp").replace(epochs=3)

    def run(seed):
        proposer = hebo_search.HeboProposer(base, 100, seed, suggestions=2, initial_points=2, gp_epochs=10,
                                            acq_population=10, acq_iterations=5)
        seen, start = [], 0
        for _ in range(2):  # the Sobol round, then a model round
            specs, results = _fake_round(proposer, start)
            proposer.observe(results)
            seen += [(s.config["recipe"], s.seed, s.tag["hebo"]) for s in specs]
            start += len(specs)
        return seen

    first = run(5)
    assert first == run(5)
    assert [t for _, _, t in first] == ["sobol", "sobol", "model", "model"]
    assert [c for c, _, _ in run(6)] != [c for c, _, _ in first]


@pytest.fixture(scope="module")
def fault():
    return digits_fault(epochs=4)


def test_hebo_improves_over_its_first_trial(fault):
    digits, recipe, faulty = fault
    # The space is wide (13 losses, 11 activations, 13 initialisers): most recipes learn little
    # in 4 epochs, so it takes HEBO's model a few rounds to find one that does.
    ctx = direct_context(Hebo, digits, recipe, faulty, seed=1, max_trials=8, params=SMALL)
    outcome = Hebo().repair(ctx)
    trials = [line for line in ctx.test_logs if line.startswith("trial {")]
    assert outcome.metrics["trials"] == 8 == len(trials)
    assert outcome.model is not None, outcome.message
    first = outcome.metrics.get("first_valid_acc")
    assert first is not None
    # The winner is one of HEBO's model-based suggestions (trials 2..7), and it beats trial 0.
    assert outcome.metrics["best_trial"] >= 2
    assert outcome.metrics["best_valid_acc"] > first
    assert outcome.metrics["best_valid_acc"] > outcome.metrics["faulty_valid_acc"] + 0.4
    assert {c.field for c in outcome.diagnosis.recipe_changes}


def test_check_says_why_a_job_is_unadaptable(fault):
    digits, recipe, faulty = fault
    ctx = direct_context(Hebo, digits, recipe, faulty, seed=0, max_trials=1, family="misclassification")
    reason = Hebo().check(ctx)
    assert reason and "training_recipe" in reason
    with pytest.raises(Exception, match="preset"):
        Hebo.resolve_params({"preset": "fast"})
    assert Hebo.resolve_params({"preset": "paper"})["acq_population"] == 100
    assert Hebo.resolve_params({"preset": "paper", "acq_population": 7})["acq_population"] == 7


def test_hebo_conforms():
    # A trial cap ends each full Fix run (before: 30 s of search each, twice): two random
    # initial points, then one round of the GP's suggestions.
    report = run_service_conformance(SERVICES / "hebo", params=SMALL, settings=SuiteSettings(budget=60.0, max_trials=4),
                                     start_timeout=300)  # hebo + torch take long to import on a loaded machine
    failures = report.failures
    assert not failures, f"{report.summary()}: {[(c.name, c.detail) for c in failures]}\n{report.log_tail}"
    assert report.status_of("describe") == "pass" and report.status_of("fix-stream") == "pass"


def test_the_local_environment_installs_hebo_without_its_gpy_pin():
    from fixbench.catalog import load_manifest
    from fixbench.catalog.environments import plan_for

    plan = plan_for(load_manifest(SERVICES / "hebo"))
    assert "hebo==0.3.6" in plan.no_deps and not any(r.startswith("hebo") for r in plan.requirements)
    assert "GPy==1.15.0" in plan.requirements


def test_the_proposer_computes_on_one_thread_whatever_the_service_has():
    # On two threads HEBO's fit summed in another order and proposed other trials (kim2023
    # small, kim-r3 seed 2: best trial 6 with --threads 2, trial 3 with --threads 1; with
    # _one_thread both give 3), so its math runs on one thread and the service's count returns.
    import torch
    from threadpoolctl import threadpool_info

    base = default_recipe("mlp").replace(epochs=3)
    proposer = hebo_search.HeboProposer(base, 100, 1, suggestions=2, initial_points=2, gp_epochs=5,
                                        acq_population=10, acq_iterations=3)
    seen = []
    for method in ("suggest", "observe"):
        inner = getattr(proposer.opt, method)

        def spy(*args, _inner=inner, **kwargs):
            seen.append((torch.get_num_threads(), {p["num_threads"] for p in threadpool_info()}))
            return _inner(*args, **kwargs)

        setattr(proposer.opt, method, spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        specs, results = _fake_round(proposer, 0)
        proposer.observe(results)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert len(seen) == 2 and all(t == 1 and pools <= {1} for t, pools in seen), seen
