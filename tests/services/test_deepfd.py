"""deepfd (DeepFD, Cao et al. ICSE 2022) as a recipe fault localiser: DeepFD's run features,
the classifiers fitted from the shipped feature table (held-out accuracy above chance), the
planted learning-rate fault localised to learning_rate, no model returned, determinism,
Check, no pickled artefact, and the conformance suite."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fixbench.conformance import run_service_conformance
from fixbench.data import load_splits
from fixbench.sdk.context import RepairContext
from fixbench.v1 import repair_pb2
from fixbench.zoo import default_recipe, train

ROOT = Path(__file__).resolve().parents[2]
SERVICE_DIR = ROOT / "services" / "deepfd"


def _load():
    spec = importlib.util.spec_from_file_location("deepfd_approach", SERVICE_DIR / "approach.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


approach = _load()
feats = sys.modules["deepfd_features"]
clf = sys.modules["deepfd_classifier"]
DeepFD = approach.DeepFD


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
def lr_fault():
    """The planted fault: the default digits MLP with its learning rate x1000 (Adam at 1.0)."""
    return default_recipe("mlp").replace(epochs=8, learning_rate=1.0)


def test_features_summarise_each_series_with_eight_statistics():
    model = torch.nn.Linear(2, 2)
    monitor = feats.FeatureMonitor(total_epochs=3)
    for epoch, loss in ((1, 2.0), (2, 1.0), (3, float("nan"))):
        monitor(SimpleNamespace(epoch=epoch, record={"loss": loss, "accuracy": 0.5, "valid_loss": loss,
                                                     "valid_accuracy": 0.5}, model=model, gradients=[]))
    vector = feats.feature_vector(monitor.rows)
    assert vector.shape == (len(feats.FEATURE_NAMES),) == (len(feats.SERIES) * 8,)
    named = dict(zip(feats.FEATURE_NAMES, vector, strict=True))
    assert named["nan_loss_max"] == 1.0 and named["nan_loss_min"] == 0.0
    assert named["loss_max"] == feats._BIG  # the NaN loss is visible, not dropped
    with pytest.raises(ValueError, match="no epoch"):
        feats.feature_vector([])


@pytest.mark.slow  # fits the three classifiers once per held-out subject
def test_shipped_table_is_the_benchmarks_and_held_out_subjects_beat_chance():
    table = clf.load_table()
    assert table.x.shape[1] == len(feats.FEATURE_NAMES) and table.y.shape[1] == 5
    assert set(np.unique(table.subjects)) >= {"digits-mlp-64-32", "digits-mlp-128", "digits-mlp-64-64-32"}
    for subject in np.unique(table.subjects):
        scores = clf.held_out_scores(table, subject)
        # Five labels: a blind guess of the top label hits 1 in 5 faulty runs.
        assert scores["top1_hit_on_faulty"] > 0.4, (subject, scores)
    assert not list(SERVICE_DIR.glob("*.pkl")) and not list(SERVICE_DIR.glob("*.joblib"))


def _context(digits, recipe, seed=0, family="training_recipe"):
    from fixbench.arrays import npz_bytes
    from fixbench.artifacts.digest import digest_of_bytes

    model = train(recipe.replace(epochs=1), (digits.train.x, digits.train.y), seed=0, num_classes=10).onnx_bytes
    blobs, refs = {}, {}
    for name, data in [("model", model)] + [(s, npz_bytes(getattr(digits, s).arrays())) for s in ("train", "valid", "repair")]:
        digest = digest_of_bytes(data)
        blobs[digest.sha256] = data
        refs[name] = digest
    job = repair_pb2.RepairJob(
        job_id="direct", fault_family=family, model=refs["model"], seed=seed,
        data=repair_pb2.DatasetRef(name="digits", train=refs["train"], valid=refs["valid"], repair=refs["repair"],
                                   input_shape=[1, 8, 8], num_classes=10),
    )
    if recipe is not None:
        job.recipe.CopyFrom(recipe.to_proto())
    return RepairContext(job, DeepFD.resolve_params({}), lambda d: blobs[d.sha256], 120.0)


def test_planted_lr_fault_is_localised_and_no_model_is_returned(digits, lr_fault):
    out = DeepFD().repair(_context(digits, lr_fault, seed=2))
    assert out.model is None and out.not_repaired
    fields = [c.field for c in out.diagnosis.recipe_changes]
    assert "learning_rate" in fields[:3], out.diagnosis.summary
    assert sorted(fields) == sorted({"optimizer", "learning_rate", "activation", "last_activation", "loss", "epochs"})
    again = DeepFD().repair(_context(digits, lr_fault, seed=2))
    assert again.diagnosis.summary == out.diagnosis.summary


def test_check_says_why(digits, lr_fault):
    assert "misclassification" in DeepFD().check(_context(digits, lr_fault, family="misclassification"))
    assert DeepFD().check(_context(digits, lr_fault)) is None
    with pytest.raises(ValueError, match="threshold"):
        DeepFD.resolve_params({"threshold": 1.5})


def test_readme_carries_the_parameter_table():
    assert DeepFD.parameter_table() in (SERVICE_DIR / "README.md").read_text(encoding="utf-8")


def test_service_conforms():
    report = run_service_conformance(SERVICE_DIR)
    failures = [(c.name, c.detail) for c in report.failures]
    assert not failures, f"{report.summary()}: {failures}\n{report.log_tail}"
    assert report.status_of("describe") == "pass" and report.status_of("fix-stream") == "pass"
