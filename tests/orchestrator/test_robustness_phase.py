"""The robustness phase: one common set of test inputs per fault (correct for the original
and every repaired model), the evaluator attacking exactly those, and a resume after kill -9
that keeps the set and repeats no finished evaluation."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluator.properties import evaluate
from fixbench.analysis.errors import InvalidSettingError
from orchestrator.robustness_phase import RobustnessPhaseError, common_indices, phase_one_spec, wants_phase
from orchestrator.spec import StudySpec
from orchestrator.study_tables import StudyTables

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / ".fixbench" / "bench"
SPEC = """name: robust
suite: quick
seeds: [0, 1, 2]
approaches:
  - name: noop
  - name: finetune
    params: {epochs: 1, train_ratio: 0.5}
budget: {wall_seconds: 120}
evaluation:
  properties: [accuracy, robustness]
  settings: {robustness: {samples: 150, steps: 20}}
concurrency: {total: 1}
retry: {attempts: 4, backoff_seconds: 0.5}
"""


def spec_of(**evaluation) -> StudySpec:
    return StudySpec.model_validate({"name": "s", "suite": "quick", "seeds": [3, 1], "approaches": [{"name": "noop"}],
                                     "budget": {"wall_seconds": 10}, "evaluation": evaluation})


def test_common_indices_intersect_and_draw_with_the_seed():
    sets = [range(0, 100), range(50, 150), [*range(60, 90), 120]]
    chosen, candidates = common_indices(sets, 10, seed=1)
    assert candidates == 30 and len(chosen) == 10 and chosen == sorted(chosen)
    assert set(chosen) <= set(range(60, 90))
    assert common_indices(sets, 10, seed=1)[0] == chosen and common_indices(sets, 10, seed=2)[0] != chosen
    assert common_indices(sets, 500, seed=1) == (list(range(60, 90)), 30)
    with pytest.raises(RobustnessPhaseError, match="samples must be ≥ 1"):
        common_indices(sets, 0, seed=1)


def test_phase_one_evaluates_without_robustness_but_with_accuracy():
    spec = spec_of(properties=["fairness", "robustness"], settings={"robustness": {"samples": 20}})
    assert wants_phase(spec)
    first = phase_one_spec(spec)
    assert first.evaluation.properties == ["accuracy", "fairness"]
    assert first.evaluation.settings == {"robustness": {"samples": 20}}
    assert spec.evaluation.properties == ["fairness", "robustness"]  # the job keys' spec is untouched
    plain = spec_of(properties=["accuracy"])
    assert not wants_phase(plain) and phase_one_spec(plain) is plain
    with pytest.raises(RobustnessPhaseError, match="robustness.indices is chosen by the study"):
        phase_one_spec(spec_of(properties=["robustness"], settings={"robustness": {"indices": [1]}}))


def test_a_changed_common_set_sends_finished_rows_back_to_pending(tmp_path):
    with StudyTables(tmp_path / "ledger.sqlite") as tables:
        tables.add_robustness_job("k", "s", "f", "set-1")
        assert tables.finish_robustness_job("k", "set-1", {"dasr": 1.0}, "ok")
        assert not tables.finish_robustness_job("k", "set-1", {"dasr": 2.0}, "again")  # once only
        tables.add_robustness_job("k", "s", "f", "set-1")
        assert tables.robustness_state("k") == "done"
        tables.add_robustness_job("k", "s", "f", "set-2")
        assert tables.robustness_state("k") == "pending" and tables.robustness_metrics("s") == {}
        assert not tables.finish_robustness_job("k", "set-1", {"dasr": 3.0}, "stale set")
        assert tables.finish_robustness_job("k", "set-2", {"dasr": 4.0}, "ok")
        assert tables.robustness_metrics("s") == {"k": {"dasr": 4.0}}


def _tiny_model_and_data():
    import torch

    from fixbench.onnxio.torch_bridge import torch_to_onnx_bytes

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (60, 6)).astype(np.float32)
    w = rng.normal(size=(6, 3)).astype(np.float32)
    y = (x @ w).argmax(axis=1).astype(np.int64)
    model = torch.nn.Linear(6, 3)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w.T))
        model.bias.zero_()
    return torch_to_onnx_bytes(model, torch.from_numpy(x[:1])), x, y


def test_the_evaluator_attacks_exactly_the_given_indices():
    model, x, y = _tiny_model_and_data()
    settings = {"robustness": {"eps": 0.05, "steps": 3, "bounds": [0.0, 1.0], "indices": [5.0, 1, 7, 5]},
                "parity": {"samples": 20}}
    out = evaluate(model, None, x, y, properties=["robustness"], settings=settings, seed=0)
    assert out.metrics["robustness_samples"] == 3  # duplicates dropped, floats from a Struct accepted
    assert "robustness" not in out.notes
    with pytest.raises(InvalidSettingError, match=r"outside the test split \[0, 60\)"):
        evaluate(model, None, x, y, properties=["robustness"], settings={"robustness": {"eps": 0.05, "indices": [60]}})
    with pytest.raises(InvalidSettingError, match="integer indices"):
        evaluate(model, None, x, y, properties=["robustness"], settings={"robustness": {"eps": 0.05, "indices": [1.5]}})
    details = evaluate(model, None, x, y, properties=["accuracy"]).details
    assert details["correct_before"] == details["correct_after"] == list(range(60))


def _cli(spec: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "study", "run", str(spec), "--out", str(out),
                             "--bench", str(BENCH)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _phase_rows(out: Path) -> dict[str, tuple]:
    try:
        with sqlite3.connect(out / "ledger.sqlite", timeout=5) as db:
            return {k: (s, a, f, sha) for k, s, a, f, sha in db.execute(
                "SELECT key, state, attempts, finished, indices_sha FROM robustness_jobs")}
    except sqlite3.Error:
        return {}


@pytest.mark.slow
def test_one_common_set_per_fault_and_resume_after_kill_9(tmp_path):
    spec, out = tmp_path / "robust.yaml", tmp_path / "out"
    spec.write_text(SPEC)
    proc = _cli(spec, out)
    deadline = time.monotonic() + 300
    before_kill: dict[str, tuple] = {}
    while time.monotonic() < deadline and proc.poll() is None:
        rows = _phase_rows(out)
        if any(r[0] == "done" for r in rows.values()):
            os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator's session: it and nothing else of ours
            proc.wait()
            before_kill = _phase_rows(out)
            break
        time.sleep(0.05)
    assert proc.returncode == -signal.SIGKILL, proc.communicate()[0]
    done_before = {k: r for k, r in before_kill.items() if r[0] == "done"}
    assert 1 <= len(done_before) < 6, before_kill  # killed in the middle of phase 2
    with StudyTables(out / "ledger.sqlite") as tables:
        first_set = tables.robustness_set("robust", "mnist-lenet5")

    resumed = _cli(spec, out)
    log = resumed.communicate(timeout=400)[0]
    assert resumed.returncode == 0, log
    assert "6 jobs, 6 already done, 0 to run" in log
    after = _phase_rows(out)
    assert len(after) == 6 and all(r[0] == "done" for r in after.values())
    for key, row in done_before.items():
        assert after[key] == row  # not evaluated again: same attempts, same finish time

    with StudyTables(out / "ledger.sqlite") as tables:
        common = tables.robustness_set("robust", "mnist-lenet5")
        assert common == first_set and len(common["indices"]) == 150 < common["candidates"]
        assert {r[3] for r in after.values()} == {common["indices_sha"]}
        for key in after:
            details = tables.details(key)
            # Every attacked input is classified correctly by the original and by this job's model.
            assert set(common["indices"]) <= set(details["correct_before"]) & set(details["correct_after"])
        metrics = tables.robustness_metrics("robust")
    assert {m["robustness_samples"] for m in metrics.values()} == {150.0}
    frame = pd.read_csv(out / "results.csv")
    assert frame["m_dasr"].notna().all() and (frame[frame.approach == "noop"]["m_dasr"] == 0).all()
    # noop's repaired model is the original: same seed, same inputs, so the same ASR.
    noop = frame[frame.approach == "noop"]
    assert (noop["m_asr_before"] == noop["m_asr_after"]).all()
    assert "ΔASR" in (out / "tables.txt").read_text() and "Robustness inputs" in (out / "report.html").read_text()
    assert json.loads(json.dumps(common["indices"])) == sorted(common["indices"])


TOKEN_SPEC = """name: robust-token
suite: quick
seeds: [0]
approaches:
  - name: noop
budget: {wall_seconds: 60}
evaluation:
  properties: [accuracy, robustness]
  settings: {robustness: {samples: 40, steps: 5}}
concurrency: {total: 1}
retry: {attempts: 2, backoff_seconds: 0.2}
"""


def test_a_robustness_study_passes_with_the_token_required_everywhere(tmp_path):
    """Phase 2 dials the evaluator like phase 1 (TLS and token from the environment): with a
    token that every service requires, the robustness phase still scores every model."""
    spec, out = tmp_path / "robust.yaml", tmp_path / "out"
    spec.write_text(TOKEN_SPEC)
    env = {**os.environ, "FIXBENCH_TOKEN": "robustness-phase-token-0123456789"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "study", "run", str(spec), "--out", str(out),
                           "--bench", str(BENCH)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    rows = _phase_rows(out)
    assert len(rows) == 1 and all(r[0] == "done" for r in rows.values()), rows
    frame = pd.read_csv(out / "results.csv")
    assert frame["m_dasr"].notna().all()
