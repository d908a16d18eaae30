"""autotrainer (AutoTrainer, Zhang et al. ICSE 2021): the monitor's symptom tests on known
curves and gradients, the fix chain's order, a planted exploding gradient (a learning rate
100x SGD's default on a linear-activation MLP, which drives the loss to NaN) detected and
repaired by the chain, determinism, Check, and the conformance suite."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fixbench.conformance import run_service_conformance
from fixbench.data import load_splits
from fixbench.onnxio import Predictor
from fixbench.sdk.context import RepairContext
from fixbench.v1 import repair_pb2
from fixbench.zoo import TrainingDiverged, default_recipe, train
from tests.services.loading import service_module

ROOT = Path(__file__).resolve().parents[2]
SERVICE_DIR = ROOT / "services" / "autotrainer"


def _load():
    return service_module("autotrainer")


approach = _load()
core = sys.modules["autotrainer_core"]
AutoTrainer = approach.AutoTrainer


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", seed=0)


@pytest.fixture(scope="module")
def faulty_recipe():
    # Linear hidden and output activations with plain SGD at lr 1 (Keras's SGD default is
    # 0.01): the logits grow without bound and the loss becomes NaN in the first epoch.
    return default_recipe("mlp").replace(epochs=10, activation="linear", last_activation="linear",
                                         optimizer="sgd", learning_rate=1.0)


def _train_fn(digits):
    def train_fn(recipe, monitor):
        try:
            result = train(recipe, (digits.train.x, digits.train.y), (digits.valid.x, digits.valid.y), seed=0,
                           num_classes=10, on_epoch=monitor)
        except TrainingDiverged:
            return None, None
        return result, result.valid_accuracy
    return train_fn


# ---- the monitor ---------------------------------------------------------------------------
def test_oscillation_needs_enough_swings():
    assert core.oscillates([0.5, 0.8, 0.5, 0.8, 0.5, 0.8, 0.5], zeta=0.03, eta=0.2)
    assert not core.oscillates([0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95], zeta=0.03, eta=0.2)
    # Small wiggles under zeta do not count.
    assert not core.oscillates([0.80, 0.81, 0.80, 0.81, 0.80, 0.81], zeta=0.03, eta=0.2)


def _state(epoch, total, acc, val_acc, grads, loss=1.0):
    record = {"epoch": epoch, "loss": loss, "accuracy": acc, "valid_loss": loss, "valid_accuracy": val_acc}
    return SimpleNamespace(epoch=epoch, total_epochs=total, record=record, gradients=grads)


def test_gradient_symptoms_use_the_tool_thresholds():
    big_first = [("w0", np.full((4, 4), 100.0)), ("b0", np.ones(4)), ("w1", np.full((4, 2), 0.1)), ("b1", np.ones(2))]
    summary = core.GradientSummary.of(big_first)
    assert summary.ratio > core.PAPER_THRESHOLDS["beta_3"]
    monitor = core.Monitor(total_epochs=3)
    for epoch in (1, 2, 3):  # not converging (accuracy 0.1), first-layer gradients 1000x the last's
        monitor(_state(epoch, 3, 0.1, 0.1, big_first))
    assert monitor.issues == ["explode"]

    dead = [("w0", np.zeros((4, 4))), ("b0", np.zeros(4)), ("w1", np.full((4, 2), 0.1)), ("b1", np.zeros(2))]
    assert core.GradientSummary.of(dead).zero_share >= core.PAPER_THRESHOLDS["gamma"]
    monitor = core.Monitor(total_epochs=3)
    for epoch in (1, 2, 3):
        monitor(_state(epoch, 3, 0.1, 0.1, dead))
    assert monitor.issues == ["relu"]  # dying ReLU outranks the vanishing gradient it implies

    healthy = [("w0", np.full((4, 4), 0.5)), ("b0", np.ones(4)), ("w1", np.full((4, 2), 0.5)), ("b1", np.ones(2))]
    monitor = core.Monitor(total_epochs=4)
    for epoch, acc in zip((1, 2, 3, 4), (0.6, 0.8, 0.9, 0.95), strict=True):
        monitor(_state(epoch, 4, acc, acc, healthy))
    assert monitor.issues == []


def test_fix_chain_follows_the_tools_order():
    assert core.chain_steps("explode") == [("selu", 0), ("relu", 0), ("gradient", 0), ("gradient", 1), ("tanh", 0), ("bn", 0)]
    assert [s for s, _ in core.chain_steps("unstable")][:4] == ["adam", "lr", "lr", "lr"]
    with pytest.raises(ValueError, match="unknown AutoTrainer symptom"):
        core.chain_steps("overfit")


def test_solutions_the_recipe_cannot_express_are_skipped(faulty_recipe):
    rng = np.random.default_rng(0)
    with pytest.raises(core.NotExpressible, match="gradient clipping"):
        core.apply_solution(faulty_recipe, "gradient", 0, "explode", rng)
    with pytest.raises(core.NotExpressible, match="BatchNorm"):
        core.apply_solution(faulty_recipe, "bn", 0, "explode", rng)
    slower, _ = core.apply_solution(faulty_recipe, "lr", 1, "unstable", rng)
    assert slower.learning_rate == pytest.approx(0.01)


def test_planted_exploding_gradient_is_detected_and_the_chain_repairs_it(digits, faulty_recipe):
    train_fn = _train_fn(digits)
    monitor = core.Monitor(faulty_recipe.epochs)
    result, acc = train_fn(faulty_recipe, monitor)
    assert monitor.issues == ["explode"] and monitor.flags.get("nan_loss")
    assert acc is None or acc < 0.2

    run = core.autotrain(faulty_recipe, lambda r: core.Monitor(r.epochs), train_fn, np.random.default_rng(0))
    assert run.initial_issues == ["explode"] and run.solved
    tried = [(a.solution, a.outcome) for a in run.attempts]
    # SELU first (still NaN at this learning rate); then the chain goes on in the tool's
    # order (ReLU + he_uniform, gradient clipping — recorded, inexpressible here —, tanh, BN)
    # until a step trains. Which later step first trains at lr 1 depends on the CPU's float kernels
    # (ReLU on some, tanh on others), so the test holds the order and the outcome, not the step.
    assert tried[0] == ("selu", "same issue")
    # "name_n": n variants of that solution, tried one after another.
    order = [name for step in core.FIX_CHAINS["explode"] for name, n in [step.rsplit("_", 1)] for _ in range(int(n))]
    solutions = [s for s, _ in tried]
    assert solutions == order[: len(solutions)]
    assert tried[-1][1] == "solved" and all(outcome != "solved" for _, outcome in tried[:-1])
    assert run.chosen.recipe.activation == solutions[-1]
    assert run.chosen.valid_accuracy > 0.8


# ---- the service ---------------------------------------------------------------------------
def _context(digits, faulty_onnx, recipe, seed=0, family="training_recipe", params=None, budget=None):
    from fixbench.arrays import npz_bytes
    from fixbench.artifacts.digest import digest_of_bytes

    blobs, refs = {}, {}
    for name, data in [("model", faulty_onnx)] + [(s, npz_bytes(getattr(digits, s).arrays())) for s in ("train", "valid", "repair")]:
        digest = digest_of_bytes(data)
        blobs[digest.sha256] = data
        refs[name] = digest
    job = repair_pb2.RepairJob(
        job_id="direct", fault_family=family, model=refs["model"], seed=seed,
        data=repair_pb2.DatasetRef(name="digits", train=refs["train"], valid=refs["valid"], repair=refs["repair"],
                                   input_shape=[1, 8, 8], num_classes=10),
        budget=budget or repair_pb2.Budget(wall_seconds=120),
    )
    if recipe is not None:
        job.recipe.CopyFrom(recipe.to_proto())
    if params:
        job.params.update(params)
    resolved = AutoTrainer.resolve_params(params or {})
    return RepairContext(job, resolved, lambda d: blobs[d.sha256], 120.0)


@pytest.fixture(scope="module")
def faulty_onnx(digits, faulty_recipe):
    # The trained faulty model with finite weights: stop after the first epoch, before NaN.
    return train(faulty_recipe.replace(learning_rate=0.5, epochs=1), (digits.train.x, digits.train.y),
                 seed=0, num_classes=10).onnx_bytes


@pytest.fixture(scope="module")
def repaired(digits, faulty_onnx, faulty_recipe):
    ctx = _context(digits, faulty_onnx, faulty_recipe, seed=3)
    return AutoTrainer().repair(ctx)


def test_service_repairs_the_planted_fault_and_names_every_symptom_and_fix(repaired, digits, faulty_onnx):
    out = repaired
    assert out.model is not None, out.message
    assert out.metrics["solved"] == 1.0 and out.metrics["best_valid_acc"] > out.metrics["faulty_valid_acc"] + 0.4
    acc = (Predictor(out.model).predict(digits.test.x) == digits.test.y).mean()
    assert acc > 0.8
    assert "exploding gradient" in out.diagnosis.summary and "selu_0" in out.diagnosis.summary
    assert "gradient_0 (not expressible)" in out.diagnosis.summary
    # The kept solution's changes come first; it is one of the chain's activation fixes.
    first = out.diagnosis.recipe_changes[0]
    assert first.field == "activation" and first.new in ("relu", "tanh")
    assert out.diagnosis.repaired_recipe.activation == first.new
    assert f"chosen {first.new}_0" in out.diagnosis.summary


def test_same_seed_same_chain(repaired, digits, faulty_onnx, faulty_recipe):
    again = AutoTrainer().repair(_context(digits, faulty_onnx, faulty_recipe, seed=3))
    assert again.diagnosis.summary == repaired.diagnosis.summary
    assert again.model == repaired.model


def test_a_sample_budget_bounds_the_retrainings(digits, faulty_onnx, faulty_recipe):
    # 2 x the faulty training's samples: the monitored faulty run, then one retraining (SELU).
    budget = repair_pb2.Budget(training_samples_multiple=2)
    out = AutoTrainer().repair(_context(digits, faulty_onnx, faulty_recipe, seed=3, budget=budget))
    assert out.metrics["trainings"] == 2 and out.metrics["stopped_by_budget"] == 1.0
    assert out.model is None and "selu_0 (same issue)" in out.diagnosis.summary


def test_no_symptom_means_nothing_to_fix(digits):
    good = default_recipe("mlp").replace(epochs=6)
    onnx = train(good, (digits.train.x, digits.train.y), seed=0, num_classes=10).onnx_bytes
    out = AutoTrainer().repair(_context(digits, onnx, good))
    assert out.model is None and "no training problem" in out.message


def test_check_says_why(digits, faulty_onnx, faulty_recipe):
    assert "misclassification" in AutoTrainer().check(_context(digits, faulty_onnx, faulty_recipe, family="misclassification"))
    assert "recipe" in AutoTrainer().check(_context(digits, faulty_onnx, None))
    assert AutoTrainer().check(_context(digits, faulty_onnx, faulty_recipe)) is None


def test_presets_fill_unset_parameters(digits, faulty_onnx, faulty_recipe):
    ctx = _context(digits, faulty_onnx, faulty_recipe, params={"preset": "paper", "check_every": 2})
    p = approach.resolved(ctx)
    assert p["determine_threshold"] == 5 and p["check_every"] == 2
    with pytest.raises(ValueError, match="preset"):
        AutoTrainer.resolve_params({"preset": "fast"})


def test_readme_carries_the_parameter_table():
    assert AutoTrainer.parameter_table() in (SERVICE_DIR / "README.md").read_text(encoding="utf-8")


def test_service_conforms():
    report = run_service_conformance(SERVICE_DIR)
    failures = [(c.name, c.detail) for c in report.failures]
    assert not failures, f"{report.summary()}: {failures}\n{report.log_tail}"
    assert report.status_of("describe") == "pass" and report.status_of("fix-stream") == "pass"
    json.dumps(report.summary())
