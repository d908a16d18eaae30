"""fewshot-mix: the guided mix (labels and weights as the method defines them), retraining on
the mix fixes a planted failure cluster, determinism, and the conformance suite."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fixbench.conformance import run_service_conformance
from tests.services.loading import service_module

SERVICES = Path(__file__).resolve().parents[2] / "services"
sys.path.insert(0, str(SERVICES / "fewshot-mix"))
import guided_mix as gm  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_mixed_samples_and_labels_follow_the_definition():
    rng = np.random.default_rng(0)
    fx = np.full((3, 2), 10.0, dtype=np.float32)
    fy = np.array([2, 2, 2])
    tx = np.concatenate([np.zeros((5, 2)), np.ones((5, 2))]).astype(np.float32)
    ty = np.array([0] * 5 + [2] * 5)
    m = gm.guided_mix(fx, fy, tx, ty, 400, 3, alpha=1.0, same_class_prob=0.5, rng=rng)
    assert m.x.shape == (400, 2) and m.soft.shape == (400, 3)
    assert np.allclose(m.soft.sum(1), 1.0) and (m.weight_on_failure >= 0.5).all()
    # Same-class partners are the class-2 training samples (value 1): x = λ·10 + (1-λ)·1, label pure 2.
    same = m.same_class
    assert 120 < same.sum() < 280
    lam = m.weight_on_failure
    assert np.allclose(m.x[same, 0], lam[same] * 10 + (1 - lam[same]) * 1.0, atol=1e-5)
    assert np.allclose(m.soft[same, 2], 1.0)
    # Other partners: the failure's share of the label is exactly its share of the input.
    other = ~same
    partner = (m.x[other, 0] - lam[other] * 10) / (1 - lam[other])
    partner_label = np.where(np.isclose(partner, 1.0, atol=1e-4), 2, 0)
    expected = np.zeros((other.sum(), 3), dtype=np.float32)
    expected[:, 2] += lam[other]
    expected[np.arange(other.sum()), partner_label] += 1 - lam[other]
    assert np.allclose(m.soft[other], expected, atol=1e-5)
    with pytest.raises(ValueError, match="failure"):
        gm.guided_mix(fx[:0], fy[:0], tx, ty, 4, 3, 1.0, 0.5, rng)


def test_expansion_shifts_images_and_keeps_labels():
    rng = np.random.default_rng(1)
    img = np.zeros((2, 1, 6, 6), dtype=np.float32)
    img[:, 0, 3, 3] = 1.0
    x, y = gm.expand_failures(img, np.array([4, 7]), expand=5, shift=1, noise=0.0, rng=rng)
    assert x.shape == (12, 1, 6, 6) and list(y) == [4, 7] * 6
    assert np.allclose(x.sum(axis=(1, 2, 3)), 1.0)  # a shifted pixel, never lost at distance 1
    moved = [tuple(np.argwhere(v[0])[0]) for v in x]
    assert all(abs(r - 3) <= 1 and abs(c - 3) <= 1 for r, c in moved) and len(set(moved)) > 1


def _cluster_data(rng):
    # Two classes on a line; a failure cluster of class 1 sits inside class 0's region.
    x0 = rng.normal([-2, 0], 0.5, (200, 2))
    x1 = rng.normal([2, 0], 0.5, (200, 2))
    cluster = rng.normal([-2, 3], 0.3, (60, 2))
    train_x = np.concatenate([x0, x1]).astype(np.float32)
    train_y = np.array([0] * 200 + [1] * 200)
    return train_x, train_y, cluster.astype(np.float32)


def _fit(x, y, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
    return model.eval()


def _repair_on_mix(seed):
    rng = np.random.default_rng(0)
    tx, ty, cluster = _cluster_data(rng)
    model = _fit(tx, ty)
    few = cluster[:5]  # five failure samples of the planted cluster
    rest = cluster[5:]
    with torch.no_grad():
        before = (model(torch.from_numpy(rest)).argmax(1) == 1).float().mean().item()
    run = np.random.default_rng(seed)
    fx, fy = gm.expand_failures(few, np.ones(5, dtype=np.int64), 10, 0, 0.3, run)
    mixed = gm.guided_mix(fx, fy, tx, ty, 400, 2, 1.0, 0.5, run)
    eye = np.eye(2, dtype=np.float32)
    x = np.concatenate([tx, mixed.x])
    soft = np.concatenate([eye[ty], mixed.soft])

    def cluster_acc(m):
        with torch.no_grad():
            return (m(torch.from_numpy(rest)).argmax(1) == 1).float().mean().item()

    b, best, epoch = gm.retrain(model, x, soft, 15, 1e-2, 32, False, run, cluster_acc)
    with torch.no_grad():
        clean = (model(torch.from_numpy(tx)).argmax(1).numpy() == ty).mean()
    return before, best, epoch, clean, [p.detach().clone() for p in model.parameters()]


def test_retraining_on_the_mix_fixes_the_planted_failure_cluster_deterministically():
    before, after, epoch, clean, w1 = _repair_on_mix(3)
    assert before < 0.1 and after > 0.8 and epoch > 0 and clean > 0.95
    *_, w2 = _repair_on_mix(3)
    assert all(torch.equal(a, b) for a, b in zip(w1, w2, strict=True))


def _approach_class():
    return service_module("fewshot-mix").FewshotMix


def test_presets_and_parameter_checks():
    cls = _approach_class()
    cls.validate_declaration()
    assert cls.name == "fewshot-mix" and cls.level == "model"
    assert cls.resolve_params({"preset": "paper"})["epochs"] == 20
    assert cls.resolve_params({"preset": "paper", "epochs": 2})["epochs"] == 2
    with pytest.raises(ValueError, match="same_class_prob"):
        cls.resolve_params({"same_class_prob": 1.5})


def test_service_conforms_and_repairs_the_fixture():
    report = run_service_conformance(SERVICES / "fewshot-mix", params={"epochs": 30, "patience": 30,
                                                                       "learning_rate": 5e-3})
    failures = [(c.name, c.detail) for c in report.failures]
    assert not failures, f"{report.summary()}: {failures}\n{report.log_tail}"
    assert report.status_of("check-missing-need") == "pass"
    assert "then REPAIRED" in report.by_name()["fix-stream"].detail
