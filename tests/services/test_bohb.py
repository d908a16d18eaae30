"""bohb (BOHB: hpbandster's model + Hyperband, epochs as the fidelity, over the Kim et al.
recipe space): the bracket arithmetic against hpbandster's, the seeded proposer, a repair of a
learning-rate fault that beats its first trial, Check, and the conformance suite."""

from __future__ import annotations

import importlib
import math

import pytest

pytest.importorskip("hpbandster", reason="hpbandster + ConfigSpace (services/bohb/requirements.txt)")

from fixbench.conformance import run_service_conformance  # noqa: E402
from fixbench.conformance.suite import SuiteSettings  # noqa: E402
from fixbench.sdk.trials import TrialResult, recipe_dimensions  # noqa: E402
from fixbench.zoo import default_recipe  # noqa: E402
from tests.services._recipe_fault import SERVICES, digits_fault, direct_context, load_service  # noqa: E402

approach = load_service("bohb", "bohb_approach")
bohb_search = importlib.import_module("bohb_search")  # approach.py put its folder on sys.path
Bohb = approach.Bohb


def test_brackets_follow_hpbandsters_bohb_master():
    from hpbandster.optimizers.bohb import BOHB as Master

    ladder = bohb_search.hyperband_budgets(1, 9, 3)
    assert ladder == pytest.approx([1, 3, 9])
    # hpbandster's own arithmetic, read off its master without starting one (no nameserver).
    master = Master.__new__(Master)
    master.eta, master.max_SH_iter, master.budgets = 3, 3, ladder
    for it in range(4):
        counts, budgets = bohb_search.bracket(it, ladder, 3)
        s = master.max_SH_iter - 1 - (it % master.max_SH_iter)
        n0 = int(math.floor(master.max_SH_iter / (s + 1)) * master.eta**s)
        assert counts == [max(int(n0 * master.eta ** (-i)), 1) for i in range(s + 1)]
        assert budgets == ladder[-s - 1:]
    assert bohb_search.bracket(0, ladder, 3) == ([9, 3, 1], ladder)
    with pytest.raises(ValueError, match="budgets"):
        bohb_search.hyperband_budgets(5, 2, 3)


def _fake_score(lr: float, epochs: int) -> float:
    # A score peaked at lr = 1e-3 and growing with epochs, as real training would.
    return max(0.0, 1 - abs(math.log10(lr) + 3) / 9) * (1 - 0.5 / epochs)


def _fake(specs):
    return [TrialResult(s, _fake_score(s.config["recipe"]["learning_rate"], s.config["recipe"]["epochs"]), "ok", 0.0)
            for s in specs]


def test_the_proposer_runs_successive_halving_and_is_seeded():
    base = default_recipe("mlp").replace(epochs=7)
    low, high = bohb_search.default_epoch_range(base, 3.0)
    assert (low, high) == (1, 9)
    assert set(bohb_search.config_space(0).keys()) == set(recipe_dimensions(fidelity_epochs=True))

    def run(seed):
        proposer = bohb_search.BohbProposer(base, 100, seed, low, high)
        rounds, start = [], 0
        for _ in range(4):
            specs = proposer.propose(start)
            results = _fake(specs)
            proposer.observe(results)
            rounds.append([(s.index, s.tag["rung"], s.config["recipe"]["epochs"], s.config["recipe"]["learning_rate"])
                           for s in specs])
            start += len(specs)
        return rounds, results

    rounds, _ = run(4)
    assert [len(r) for r in rounds] == [9, 3, 1, 3]  # bracket 0's rungs, then bracket 1 starts
    assert [r[0][2] for r in rounds] == [1, 3, 9, 3]  # epochs = the rung's budget
    # The 3 promoted to rung 1 are rung 0's best by (score, index), their configs unchanged.
    rung0 = sorted(rounds[0], key=lambda t: -_fake_score(t[3], 1))[:3]
    assert sorted(t[3] for t in rounds[1]) == sorted(t[3] for t in rung0)
    assert rounds == run(4)[0]
    assert rounds != run(5)[0]


@pytest.fixture(scope="module")
def fault():
    return digits_fault(epochs=4)


def test_bohb_improves_over_its_first_trial(fault):
    digits, recipe, faulty = fault
    ctx = direct_context(Bohb, digits, recipe, faulty, seed=1, max_trials=13)
    outcome = Bohb().repair(ctx)
    assert outcome.metrics["trials"] == 13
    assert outcome.model is not None, outcome.message
    assert outcome.metrics["best_valid_acc"] > outcome.metrics["first_valid_acc"]
    assert outcome.metrics["best_valid_acc"] > outcome.metrics["faulty_valid_acc"] + 0.3
    assert any("rung" in line for line in ctx.test_logs if line.startswith("trial {"))


def test_check_and_params(fault):
    digits, recipe, faulty = fault
    ctx = direct_context(Bohb, digits, recipe, faulty, seed=0, max_trials=1, family="misclassification")
    assert "training_recipe" in Bohb().check(ctx)
    with pytest.raises(Exception, match="eta"):
        Bohb.resolve_params({"eta": 1.0})
    assert Bohb.resolve_params({"preset": "paper"})["min_epochs"] == 0


def test_bohb_conforms():
    # A trial cap ends each full Fix run (before: 30 s of search each, twice).
    report = run_service_conformance(SERVICES / "bohb", settings=SuiteSettings(budget=60.0, max_trials=6),
                                     start_timeout=300)
    failures = report.failures
    assert not failures, f"{report.summary()}: {[(c.name, c.detail) for c in failures]}\n{report.log_tail}"
    assert report.status_of("describe") == "pass" and report.status_of("fix-stream") == "pass"
