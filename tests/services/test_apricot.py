"""Apricot: the weight adjustment (towards the right reduced models, away from the wrong ones),
reduced-model training, determinism, Check, and the conformance suite against the service."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fixbench.conformance import run_service_conformance

SERVICES = Path(__file__).resolve().parents[2] / "services"
sys.path.insert(0, str(SERVICES / "apricot"))
import apricot_core as core  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _weights(*values):
    return [torch.tensor(v, dtype=torch.float32) for v in values]


def test_adjustment_moves_towards_the_correct_reduced_models_and_away_from_the_wrong():
    base = _weights([[0.0, 0.0]], [0.0])
    reduced = [_weights([[1.0, 2.0]], [1.0]), _weights([[3.0, 2.0]], [1.0]), _weights([[-4.0, 0.0]], [-2.0])]
    new, adj = core.adjust_weights(base, reduced, [True, True, False], lr=0.1, strategy="both-org")
    assert (adj.correct, adj.incorrect, adj.applied) == (2, 1, True)
    right_mean = torch.tensor([[2.0, 2.0]])
    wrong_mean = torch.tensor([[-4.0, 0.0]])
    # w' = w + lr·(a/(a+b))·(c̄ − w) + lr·(b/(a+b))·(w − ī)
    expected = 0.1 * (2 / 3) * right_mean + 0.1 * (1 / 3) * (-wrong_mean)
    assert torch.allclose(new[0], expected)
    assert (new[0] - right_mean).norm() < (base[0] - right_mean).norm()
    assert (new[0] - wrong_mean).norm() > (base[0] - wrong_mean).norm()
    # The bias moves towards the right models' mean bias (1.0) and away from -2.
    assert torch.allclose(new[1], torch.tensor([0.1 * (2 / 3) * 1.0 + 0.1 * (1 / 3) * 2.0]))


def test_on_a_tiny_model_the_adjustment_helps_the_failing_input():
    # A 2-class linear model that gets x wrong; two reduced models get it right, one wrong.
    torch.manual_seed(0)
    x = torch.tensor([[1.0, 0.0]])
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        model.bias.zero_()
    right = [nn.Linear(2, 2) for _ in range(2)]
    for r in right:
        with torch.no_grad():
            r.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
            r.bias.zero_()
    wrong = nn.Linear(2, 2)
    with torch.no_grad():
        wrong.weight.copy_(torch.tensor([[0.0, 0.0], [3.0, 0.0]]))
        wrong.bias.zero_()
    reduced = [core.flat_weights(m) for m in (*right, wrong)]
    assert model(x).argmax().item() == 1  # wrong: the label is 0
    weights = core.flat_weights(model)
    for _ in range(10):
        weights, _ = core.adjust_weights(weights, reduced, [True, True, False], lr=0.2)
    core.set_weights(model, weights)
    assert model(x).argmax().item() == 0
    mean_right = reduced[0][0]
    assert (weights[0] - mean_right).norm() < (torch.tensor([[0.0, 0.0], [1.0, 0.0]]) - mean_right).norm()


def test_no_direction_when_all_or_no_reduced_models_are_right():
    base = _weights([1.0, 2.0])
    reduced = [_weights([0.0, 0.0]), _weights([5.0, 5.0])]
    for flags in ([True, True], [False, False]):
        new, adj = core.adjust_weights(base, reduced, flags, lr=1.0)
        assert not adj.applied and torch.equal(new[0], base[0])
    with pytest.raises(ValueError, match="strategy"):
        core.adjust_weights(base, reduced, [True, False], lr=1.0, strategy="sideways")


def test_class_balanced_subset_draws_every_class_evenly():
    y = np.repeat(np.arange(4), [50, 50, 50, 10])
    idx = core.class_balanced_subset(y, 40, np.random.default_rng(0))
    assert len(idx) == 40 and len(np.unique(idx)) == 40
    counts = np.bincount(y[idx], minlength=4)
    assert counts.min() == 10 and counts.max() <= 20


def _blobs(n, rng):
    centres = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    y = rng.integers(0, 3, n)
    x = (centres[y] + rng.normal(0, 0.8, (n, 2))).astype(np.float32)
    return x, y.astype(np.int64)


def _settings(**kw):
    base = dict(reduced_models=3, subset_size=60, reduced_epochs=5, reduced_lr=1e-2, adjust_lr=1e-2,
                strategy="both-org", retrain_epochs=1, retrain_lr=1e-3, batch_size=20, retrain_samples=60,
                rounds=2, patience=10)
    base.update(kw)
    return core.Settings(**base)


def _run(seed):
    rng = np.random.default_rng(0)
    train, valid, rep = _blobs(300, rng), _blobs(100, rng), _blobs(100, rng)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[2].bias.copy_(torch.tensor([3.0, 0.0, 0.0]))  # a fault: biased to class 0
    s = _settings()
    run_rng = np.random.default_rng(seed)
    reduced = core.train_reduced_models(model, train, valid, s, nn.functional.cross_entropy, run_rng, seed)
    result = core.repair(model, reduced, rep, train, valid, s, nn.functional.cross_entropy, run_rng)
    return result, [p.detach().clone() for p in result.model.parameters()]


def test_the_loop_is_deterministic_for_a_seed_and_keeps_the_best_on_validation():
    (r1, w1), (r2, w2) = _run(3), _run(3)
    assert all(torch.equal(a, b) for a, b in zip(w1, w2, strict=True))
    assert r1.best_valid_acc == r2.best_valid_acc and r1.adjustments == r2.adjustments
    assert r1.best_valid_acc >= r1.base_valid_acc and r1.adjustments > 0


def test_reduced_models_need_an_initialiser():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.k = nn.Parameter(torch.ones(2))

        def forward(self, x):
            return x * self.k

    assert core.can_reinitialise(nn.Sequential(nn.Linear(2, 2))) is None
    reason = core.can_reinitialise(nn.Sequential(nn.Linear(2, 2), Scale()))
    assert reason and "Scale" in reason and "initialiser" in reason
    with pytest.raises(core.CannotReinitialise):
        core.reinitialise(nn.Sequential(Scale()), seed=0)


def _approach_class():
    spec = importlib.util.spec_from_file_location("apricot_approach", SERVICES / "apricot" / "approach.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Apricot


def test_presets_fill_defaults_and_given_params_win():
    cls = _approach_class()
    cls.validate_declaration()
    assert cls.resolve_params({})["reduced_models"] == 8
    paper = cls.resolve_params({"preset": "paper"})
    assert (paper["reduced_models"], paper["subset_size"], paper["reduced_epochs"], paper["reduced_lr"],
            paper["adjust_lr"], paper["retrain_epochs"], paper["batch_size"]) == (20, 1000, 60, 2e-4, 1e-3, 5, 20)
    assert cls.resolve_params({"preset": "paper", "reduced_models": 4})["reduced_models"] == 4
    with pytest.raises(ValueError, match="preset"):
        cls.resolve_params({"preset": "huge"})


def test_service_conforms_and_repairs_the_fixture():
    report = run_service_conformance(SERVICES / "apricot", params={
        "reduced_models": 4, "subset_size": 120, "reduced_epochs": 20, "reduced_lr": 1e-2, "adjust_lr": 0.3,
        "retrain_lr": 1e-2, "retrain_epochs": 2,
        "retrain_samples": 120, "rounds": 2})
    failures = [(c.name, c.detail) for c in report.failures]
    assert not failures, f"{report.summary()}: {failures}\n{report.log_tail}"
    assert report.status_of("fix-stream") == "pass" and report.status_of("check-missing-need") == "pass"
    assert "then REPAIRED" in report.by_name()["fix-stream"].detail


def test_an_interrupted_reduced_model_is_dropped():
    rng = np.random.default_rng(0)
    train, valid = _blobs(200, rng), _blobs(50, rng)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
    calls = {"n": 0}
    done = []

    def stop():
        # Let two rDLMs finish, then stop in the middle of the third's training (after its
        # loop-top check and two mini-batches; the third mini-batch check stops it).
        if len(done) >= 2:
            calls["n"] += 1
        return calls["n"] > 3

    s = _settings(reduced_models=5)
    reduced = core.train_reduced_models(model, train, valid, s, nn.functional.cross_entropy, rng, 0,
                                        lambda i, acc: done.append(i), stop)
    assert len(reduced) == 2 and done == [0, 1] and calls["n"] == 5  # top check, 3 batches, the post-training check
