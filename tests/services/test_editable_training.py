"""editable-training: the editor fixes the edited input and leaves a held-aside set (nearly)
unchanged, editable training makes edits cheaper and more local, determinism, Check, and the
conformance suite against the service."""

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
sys.path.insert(0, str(SERVICES / "editable-training"))
import editable_core as core  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _blobs(n, rng, k=4):
    centres = np.stack([np.cos(np.arange(k) * 2 * np.pi / k), np.sin(np.arange(k) * 2 * np.pi / k)], 1) * 3.0
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(0, 0.6, (n, 2))).astype(np.float32), y.astype(np.int64)


def _trained(seed=0):
    rng = np.random.default_rng(seed)
    x, y = _blobs(400, rng)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
    model.eval()
    return model, x, y


def test_edit_loss_is_zero_exactly_when_the_target_wins():
    logp = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]]), dim=1)
    assert core.edit_loss(logp[:1], torch.tensor([0])).item() == 0.0
    assert core.edit_loss(logp[1:], torch.tensor([0])).item() == pytest.approx(3.0)


def test_the_edit_fixes_the_edited_input_and_leaves_the_held_aside_set_unchanged():
    model, x, y = _trained()
    rng = np.random.default_rng(5)
    held_x, _ = _blobs(300, rng)
    # An input of class 0 near its centre, to be edited to class 1: a real change of mind.
    target = torch.tensor([1])
    xe = torch.tensor([[3.0, 0.0]])
    assert model(xe).argmax().item() == 0
    before = model(torch.from_numpy(held_x)).argmax(dim=1)
    params = core.parameters_of(model)
    result = core.edit(model, params, xe, target, lr=0.05, max_steps=100, probabilities=False)
    assert result.success and 0 < result.steps <= 100
    out = torch.func.functional_call(model, result.params, (xe,))
    assert out.argmax().item() == 1
    after = torch.func.functional_call(model, result.params, (torch.from_numpy(held_x),)).argmax(dim=1)
    # Locality: most held-aside predictions survive (far-away classes 2 and 3 all of them).
    assert (after == before).float().mean().item() >= 0.8
    far = (before == 2) | (before == 3)
    assert (after[far] == before[far]).float().mean().item() >= 0.95
    # The editor is out of place: the model's own parameters did not move.
    assert model(xe).argmax().item() == 0


def test_editable_training_makes_edits_local():
    s = core.MetaSettings(steps=60, batch_size=64, lr=1e-3, editor_lr=0.05, edit_steps=5, c_edit=1.0, c_loc=1.0,
                          edits_per_step=2)

    def drawdown(m):
        rng = np.random.default_rng(9)
        ex, ey = _blobs(20, rng)
        tx, _ = _blobs(300, rng)
        base = m(torch.from_numpy(tx)).argmax(1)
        changes, held = [], 0
        for i in range(len(ey)):
            r = core.edit(m, core.parameters_of(m), torch.from_numpy(ex[i:i + 1]),
                          torch.tensor([(int(ey[i]) + 1) % 4]), lr=0.05, max_steps=30, probabilities=False)
            held += r.success
            changes.append((torch.func.functional_call(m, r.params, (torch.from_numpy(tx),)).argmax(1) != base)
                           .float().mean().item())
        return float(np.mean(changes)), held

    plain, x, y = _trained()
    plain_draw, plain_held = drawdown(plain)
    meta, _, _ = _trained()
    metrics = core.meta_train(meta, x, y, 4, s, False, np.random.default_rng(0), nn.functional.cross_entropy)
    assert set(metrics) == {"main_loss", "edit_loss", "locality_loss", "edit_success"}
    meta_draw, meta_held = drawdown(meta)
    assert meta_held >= plain_held
    assert meta_draw < plain_draw


def test_sequential_edits_fix_the_inputs_deterministically():
    def run():
        model, x, y = _trained()
        wrong_labels = (y[:10] + 1) % 4
        results, n = core.apply_edits(model, x[:10], wrong_labels, lr=0.05, max_steps=50, probabilities=False)
        return model, x, wrong_labels, results, n

    m1, x, labels, r1, n1 = run()
    m2, _, _, r2, _ = run()
    assert n1 == 10 and all(a.steps == b.steps for a, b in zip(r1, r2, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters(), strict=True))
    # The last edit holds for sure; earlier ones mostly survive the later ones.
    assert r1[-1].success
    with torch.no_grad():
        assert m1(torch.from_numpy(x[9:10])).argmax().item() == labels[9]


def _approach_class():
    return service_module("editable-training").EditableTraining


def test_presets_and_parameter_checks():
    cls = _approach_class()
    cls.validate_declaration()
    assert cls.name == "editable-training" and cls.level == "model"
    paper = cls.resolve_params({"preset": "paper"})
    assert (paper["c_edit"], paper["c_loc"], paper["meta_edit_steps"], paper["batch_size"]) == (0.01, 0.01, 10, 128)
    assert cls.resolve_params({"preset": "paper", "meta_steps": 3})["meta_steps"] == 3
    with pytest.raises(ValueError, match="edit_max_steps"):
        cls.resolve_params({"edit_max_steps": 0})


def test_check_needs_two_classes():
    from fixbench.v1 import repair_pb2

    cls = _approach_class()

    class Ctx:
        job = repair_pb2.RepairJob(data=repair_pb2.DatasetRef(num_classes=1))

    assert "2 classes" in cls().check(Ctx())
    Ctx.job = repair_pb2.RepairJob(data=repair_pb2.DatasetRef(num_classes=3))
    assert cls().check(Ctx()) is None


def test_service_conforms_and_repairs_the_fixture():
    report = run_service_conformance(SERVICES / "editable-training",
                                     params={"meta_steps": 20, "batch_size": 32, "edit_max_steps": 20, "editor_lr": 0.05})
    failures = [(c.name, c.detail) for c in report.failures]
    assert not failures, f"{report.summary()}: {failures}\n{report.log_tail}"
    assert report.status_of("check-missing-need") == "pass"
    assert "then REPAIRED" in report.by_name()["fix-stream"].detail
