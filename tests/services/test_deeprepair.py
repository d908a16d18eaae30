"""deeprepair (Yu et al.'s style-guided repair): the failure clustering picks one reference per
planted style, the style transfer moves an image's feature statistics to the style image's
while keeping its content, the consistency loss, Check (vector inputs are unadaptable),
determinism on a tiny CNN, and the conformance suite."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fixbench.arrays import npz_bytes
from fixbench.artifacts.digest import digest_of_bytes
from fixbench.conformance import run_service_conformance
from fixbench.conformance.fixture import build_fixture
from fixbench.onnxio.torch_bridge import torch_to_onnx_bytes
from fixbench.sdk.context import RepairContext
from fixbench.v1 import repair_pb2

ROOT = Path(__file__).resolve().parents[2]
SERVICE_DIR = ROOT / "services" / "deeprepair"


def _load_approach():
    spec = importlib.util.spec_from_file_location("deeprepair_approach", SERVICE_DIR / "approach.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


approach = _load_approach()
core = sys.modules["dr_core"]
DeepRepair = approach.DeepRepair


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_clustering_picks_one_reference_per_planted_style():
    rng = np.random.default_rng(0)
    bright = 0.8 + rng.normal(0, 0.02, (6, 1, 8, 8))  # style A: bright, flat
    stripes = np.tile(np.array([0.0, 1.0] * 4), (6, 1, 8, 1)) + rng.normal(0, 0.02, (6, 1, 8, 8))  # style B
    x = np.concatenate([bright, stripes]).astype(np.float32)
    y = np.zeros(12, np.int64)
    refs = core.style_references(x, y, clusters_per_class=2, seed=0)
    assert len(refs) == 2 and {int(r) // 6 for r in refs} == {0, 1}
    # One class with a single failure: that failure is its reference.
    refs = core.style_references(x[:7], np.array([0] * 6 + [3]), clusters_per_class=2, seed=0)
    assert 6 in refs and len(refs) == 3


def _identity_encoder_model():
    """Conv 1x1 with weight 1: the conv features are the (non-negative) pixels themselves, so
    the style statistics are the image's own mean and standard deviation."""
    conv = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
    return torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 2))


def test_style_transfer_moves_the_statistics_to_the_style_image():
    encoder = core.Encoder(_identity_encoder_model())
    grid = np.linspace(0.2, 0.6, 64, dtype=np.float32).reshape(1, 1, 8, 8)  # content: a ramp, mean 0.4
    style = np.random.default_rng(0).uniform(0.7, 0.9, (1, 1, 8, 8)).astype(np.float32)  # mean 0.8, small spread
    out = core.stylise(encoder, grid, style, steps=300, style_weight=50.0, lr=0.01, bounds=(0.0, 1.0))
    assert out.shape == grid.shape
    assert abs(out.mean() - style.mean()) < 0.05 < abs(grid.mean() - style.mean())
    assert abs(out.std() - style.std()) < abs(grid.std() - style.std())
    # The content's structure stays: the ramp's order of pixels is kept.
    assert np.corrcoef(out.ravel(), grid.ravel())[0, 1] > 0.9
    # No steps: the content is returned unchanged.
    assert np.allclose(core.stylise(encoder, grid, style, 0, 50.0, 0.01, (0.0, 1.0)), grid)


def test_consistency_loss_and_views():
    p = torch.softmax(torch.randn(4, 3), dim=1)
    q = torch.softmax(torch.randn(4, 3), dim=1)
    assert float(core.jsd_consistency(p, p, p)) == pytest.approx(0.0, abs=1e-6)
    assert float(core.jsd_consistency(p, q, q)) > 0.0
    x, s = torch.zeros(5, 1, 2, 2), torch.ones(5, 1, 2, 2)
    view = core.augmix_views(x, [s, s], np.random.default_rng(0))
    # (1 - m) * 0 + m * 1 with one m per input, in [0, 1].
    assert torch.all(view >= 0) and torch.all(view <= 1)
    assert torch.allclose(view, view[:, :, :1, :1].expand_as(view))


# ---- the approach on a tiny CNN --------------------------------------------------------------
def _tiny_cnn_fault():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(3 * 8 * 8, 3), torch.nn.Softmax(dim=1))
    splits = {}
    for name, n in (("train", 90), ("valid", 30), ("repair", 30)):
        y = rng.integers(0, 3, n)
        x = rng.uniform(0, 0.2, (n, 1, 8, 8)).astype(np.float32)
        for i, c in enumerate(y):
            x[i, 0, :, c * 2 : c * 2 + 2] += 0.8  # the class is which columns are lit
        splits[name] = npz_bytes({"x": x, "y": y.astype(np.int64)})
    return torch_to_onnx_bytes(model, torch.zeros(1, 1, 8, 8)), splits


def _context(model_bytes, splits, input_shape, num_classes, params=None, seed=0):
    blobs, refs = {}, {}
    for name, data in [("model", model_bytes)] + list(splits.items()):
        digest = digest_of_bytes(data)
        blobs[digest.sha256] = data
        refs[name] = digest
    job = repair_pb2.RepairJob(
        job_id="direct", fault_family="misclassification", model=refs["model"], seed=seed,
        data=repair_pb2.DatasetRef(name="tiny", train=refs["train"], valid=refs["valid"], repair=refs["repair"],
                                   input_shape=list(input_shape), num_classes=num_classes),
    )
    job.params.update(params or {})
    return RepairContext(job, DeepRepair.resolve_params(params or {}), lambda d: blobs[d.sha256], 120.0)


SMALL = {"epochs": 2, "style_steps": 3, "train_samples": 60, "learning_rate": 0.05}


def test_same_seed_same_repair_on_a_tiny_cnn():
    model, splits = _tiny_cnn_fault()
    runs = [DeepRepair().repair(_context(model, splits, (1, 8, 8), 3, SMALL)) for _ in range(2)]
    assert runs[0].model is not None and runs[0].model == runs[1].model
    assert runs[0].metrics == runs[1].metrics and runs[0].metrics["style_references"] >= 1
    other = DeepRepair().repair(_context(model, splits, (1, 8, 8), 3, SMALL, seed=1))
    assert other.model != runs[0].model


def test_check_refuses_vector_inputs():
    fixture = build_fixture()
    reason = DeepRepair().check(_context(fixture.model, fixture.splits, fixture.input_shape, fixture.num_classes))
    assert reason and "channels, height, width" in reason


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="preset"):
        DeepRepair.resolve_params({"preset": "huge"})
    with pytest.raises(ValueError, match="styles_per_image"):
        DeepRepair.resolve_params({"styles_per_image": 0})


def test_readme_carries_the_generated_parameter_table():
    readme = (SERVICE_DIR / "README.md").read_text(encoding="utf-8")
    assert DeepRepair.parameter_table() in readme


@pytest.mark.slow  # starts the service as a process and runs the whole suite: minutes on a loaded 2-core machine
def test_service_conforms():
    # The suite's fixture is a dense network on vectors: DeepRepair refuses it (no image style),
    # and the suite checks that Check and Fix agree and say why.
    report = run_service_conformance(SERVICE_DIR, params=SMALL)
    failures = report.failures
    assert not failures, f"{report.summary()}: {[(c.name, c.detail) for c in failures]}\n{report.log_tail}"
    assert report.status_of("describe") == "pass" and report.status_of("fix-stream") == "pass"
    assert "channels, height, width" in report.by_name()["check-valid"].detail
