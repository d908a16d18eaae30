"""The quick study end to end through the CLI, as a user runs it, then resumed."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


def fixbench(*args, cwd=ROOT, timeout=600):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_quick_study_runs_and_resumes(tmp_path):
    out = tmp_path / "quick"
    bench = ROOT / ".fixbench" / "bench"  # shared build cache: the fault is built once per machine
    # an override equal to the file's value: same job keys, and the run records it
    first = fixbench("study", "run", "studies/quick.yaml", "--out", str(out), "--bench", str(bench),
                     "--set", "seeds=[0,1,2]")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "6 jobs, 0 already done, 6 to run" in first.stdout
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 6 and set(frame["seed"]) == {0, 1, 2}
    noop = frame[frame.approach == "noop"]
    assert (noop.status == "NOT_REPAIRED").all() and (noop.rr == 0).all() and (noop.nfr == 0).all()
    fine = frame[frame.approach == "finetune"]
    assert fine.rr.mean() > 0, fine[["status", "rr", "message"]]
    assert pd.read_parquet(out / "results.parquet").shape == frame.shape
    assert "RR %" in first.stdout and "finetune" in first.stdout
    # every job keeps its log: each attempt and the lines the approach streamed, linked from the report
    key = fine.job_key.iloc[0]
    log = (out / "jobs" / f"{key[:16]}.log").read_text()
    assert "=== attempt 1 on 127.0.0.1:" in log and "fine-tuning on" in log and "--> " in log
    attempts = [line for line in (out / "jobs" / f"{key[:16]}.attempts.jsonl").read_text().splitlines() if line]
    assert len(attempts) == 1 and '"status": "' in attempts[0]
    assert f"href='jobs/{key[:16]}.log'" in (out / "report.html").read_text()
    assert "\\begin{table}" in (out / "tables.tex").read_text()
    # experiment tracking: one MLflow run per job, in a local store
    exported = fixbench("study", "mlflow", str(out))
    assert exported.returncode == 0 and "6 run(s) written" in exported.stdout, exported.stdout + exported.stderr
    # every process the runtime started is gone
    assert not list((out / "run").glob("*.port")) or all(
        subprocess.run(["fuser", str(p)], capture_output=True).returncode != 0 for p in (out / "run").glob("*.port"))

    again = fixbench("study", "run", "studies/quick.yaml", "--out", str(out), "--bench", str(bench))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "6 jobs, 6 already done, 0 to run" in again.stdout
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), frame)

    from orchestrator.study_tables import StudyTables

    with StudyTables(out / "ledger.sqlite") as tables:
        assert [r["overrides"] for r in tables.runs("quick")] == [["seeds=[0,1,2]"], []]
    status = fixbench("study", "status", str(out))
    assert status.returncode == 0 and "done 6" in status.stdout


def test_cli_rejects_a_malformed_spec(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsuite: quick\nseeds: [0]\napproaches:\n  - name: nosuch\nbudget: {wall_seconds: 1}\n")
    result = fixbench("study", "run", str(bad), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "unknown approach 'nosuch'" in result.stdout


def test_cli_rejects_an_unknown_suite(tmp_path):
    result = fixbench("bench", "build", "nosuch", "--bench", str(tmp_path))
    assert result.returncode == 2 and "unknown fault suite 'nosuch'" in result.stdout
