"""`fixbench study merge`: parts of one study run apart (each on some of its faults) become
one results folder; a fault built differently in two parts, or a job with two results, is
refused before anything is written."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.ledger import Ledger
from orchestrator.merge import MergeError, merge_parts
from orchestrator.results import results_frame
from orchestrator.study_tables import StudyTables
from tests.orchestrator.test_report import FAULTS, STUDY, crafted_ledger

ROOT = Path(__file__).resolve().parents[2]


def split(whole: Path, folder: Path, faults_of_part: list[list[str]]) -> list[Path]:
    """The crafted study cut into parts by fault, as `--set 'faults=[...]'` runs would leave it."""
    parts = []
    for i, keep in enumerate(faults_of_part):
        part = folder / f"part{i}"
        part.mkdir()
        target = part / "ledger.sqlite"
        db = sqlite3.connect(whole)
        db.execute(f"VACUUM INTO '{target}'")
        db.close()
        db = sqlite3.connect(target)
        marks = ",".join("?" * len(keep))
        db.execute(f"DELETE FROM jobs WHERE fault_id NOT IN ({marks})", keep)
        db.execute(f"DELETE FROM study_faults WHERE fault_id NOT IN ({marks})", keep)
        keys = [k for (k,) in db.execute("SELECT key FROM jobs")]
        db.execute("INSERT OR REPLACE INTO study_current_jobs(study, keys_json, recorded) VALUES (?,?,0)",
                   (STUDY, json.dumps(sorted(keys))))
        db.commit()
        db.close()
        parts.append(part)
    return parts


@pytest.fixture
def whole(tmp_path) -> Path:
    folder = tmp_path / "whole"
    folder.mkdir()
    return crafted_ledger(folder)


def test_merged_parts_give_the_whole_study(whole, tmp_path):
    parts = split(whole, tmp_path, [["mnist-lenet5"], ["cifar10-vgg16", "kim-m2"]])
    counts = merge_parts(parts, tmp_path / "merged")
    assert counts["faults"] == 3 and counts["jobs"] == 6 * 3 * 3
    merged = tmp_path / "merged" / "ledger.sqlite"
    a, b = Ledger(whole), Ledger(merged)
    try:
        cols = ["approach", "fault_id", "seed", "status", "rr", "nfr"]
        expect = results_frame(a, STUDY).sort_values(cols[:3])[cols].reset_index(drop=True)
        got = results_frame(b, STUDY).sort_values(cols[:3])[cols].reset_index(drop=True)
    finally:
        a.close()
        b.close()
    assert expect.equals(got)
    with StudyTables(merged) as tables:
        assert set(tables.faults(STUDY)) == set(FAULTS)
        assert len(tables.current_jobs(STUDY)) == 6 * 3 * 3


def test_a_fault_built_differently_in_two_parts_is_refused(whole, tmp_path):
    parts = split(whole, tmp_path, [["mnist-lenet5", "kim-m2"], ["cifar10-vgg16", "kim-m2"]])
    db = sqlite3.connect(parts[1] / "ledger.sqlite")
    meta = json.loads(db.execute("SELECT meta_json FROM study_faults WHERE fault_id='kim-m2'").fetchone()[0])
    meta["metrics"]["test_accuracy"] = 12.0  # rebuilt on another CPU
    db.execute("UPDATE study_faults SET meta_json=? WHERE fault_id='kim-m2'", (json.dumps(meta),))
    db.commit()
    db.close()
    with pytest.raises(MergeError, match="kim-m2 was built differently"):
        merge_parts(parts, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_a_job_with_two_results_is_refused_and_a_done_job_wins_over_a_pending_one(whole, tmp_path):
    parts = split(whole, tmp_path, [["mnist-lenet5", "kim-m2"], ["cifar10-vgg16", "kim-m2"]])
    db = sqlite3.connect(parts[1] / "ledger.sqlite")
    db.execute("UPDATE jobs SET state='pending', status=NULL, result_json=NULL WHERE key='alpha-kim-m2-0'")
    db.commit()
    merge_parts(parts, tmp_path / "merged")  # done in part0, pending in part1: done
    ledger = Ledger(tmp_path / "merged" / "ledger.sqlite")
    assert ledger.state("alpha-kim-m2-0") == "done"
    ledger.close()
    db.execute("UPDATE jobs SET state='done', status='NOT_REPAIRED', result_json='{}' WHERE key='alpha-kim-m2-0'")
    db.commit()
    db.close()
    with pytest.raises(MergeError, match=r"alpha on kim-m2, seed 0\) has different results"):
        merge_parts(parts, tmp_path / "merged2")


def test_bad_parts_are_named(whole, tmp_path):
    with pytest.raises(MergeError, match="at least two"):
        merge_parts([whole.parent], tmp_path / "m")
    with pytest.raises(MergeError, match="no ledger"):
        merge_parts([whole.parent, tmp_path / "nowhere"], tmp_path / "m")
    with pytest.raises(MergeError, match="already holds a ledger"):
        merge_parts([whole.parent, whole.parent], whole.parent)
    other = tmp_path / "other"
    other.mkdir()
    ledger = Ledger(other / "ledger.sqlite")
    ledger.add("k", "another-study", "noop", "1", "f", 0, {})
    ledger.close()
    with pytest.raises(MergeError, match="different studies"):
        merge_parts([whole.parent, other], tmp_path / "m")


def test_cli_merges_and_writes_the_report(whole, tmp_path):
    parts = split(whole, tmp_path, [["mnist-lenet5"], ["cifar10-vgg16", "kim-m2"]])
    out = tmp_path / "merged"
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "study", "merge", *map(str, parts), "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "faults 3" in proc.stdout and (out / "report.html").is_file() and (out / "results.csv").is_file()


def test_a_job_run_in_two_parts_merges_when_only_its_measured_times_differ(whole, tmp_path):
    """kim-r3 ran locally and under compose: same keys, same results, other timings, and
    the fault at another position among its run's faults."""
    parts = split(whole, tmp_path, [["mnist-lenet5", "kim-m2"], ["cifar10-vgg16", "kim-m2"]])
    db = sqlite3.connect(parts[1] / "ledger.sqlite")
    (result,) = db.execute("SELECT result_json FROM jobs WHERE key='alpha-kim-m2-0'").fetchone()
    slower = dict(json.loads(result), job_seconds=99.0, approach_metrics={"search_seconds": 98.0})
    db.execute("UPDATE jobs SET result_json=? WHERE key='alpha-kim-m2-0'", (json.dumps(slower),))
    p0 = sqlite3.connect(parts[0] / "ledger.sqlite")
    (r0,) = p0.execute("SELECT result_json FROM jobs WHERE key='alpha-kim-m2-0'").fetchone()
    p0.execute("UPDATE jobs SET result_json=? WHERE key='alpha-kim-m2-0'",
               (json.dumps(dict(json.loads(r0), approach_metrics={"search_seconds": 1.0})),))
    p0.commit()
    p0.close()
    meta = json.loads(db.execute("SELECT meta_json FROM study_faults WHERE fault_id='kim-m2'").fetchone()[0])
    db.execute("UPDATE study_faults SET meta_json=? WHERE fault_id='kim-m2'",
               (json.dumps(dict(meta, order=0, train_seconds=5.0)),))
    db.commit()
    db.close()
    assert merge_parts(parts, tmp_path / "merged")["jobs"] == 6 * 3 * 3


def test_a_study_of_two_suites_records_each_fault_at_its_place_in_both(tmp_path):
    """`suite: [quick, quick-recipe]` (compose-all, reference): the positions run through the
    suites in their order, so the recipe fault follows the quick one in every part."""
    from fixbench.faults.bundle import FILES, Fault
    from fixbench.faults.suites import suite_recipes
    from orchestrator.spec import StudySpec
    from orchestrator.study import record_faults

    spec = StudySpec.model_validate({"name": "two", "suite": ["quick", "quick-recipe"], "seeds": [0],
                                     "approaches": [{"name": "noop"}], "budget": {"wall_seconds": 60}})
    digests = {name: {"sha256": f"{i:064x}", "size_bytes": 10 + i} for i, name in enumerate(FILES)}
    recipe_fault = suite_recipes("quick-recipe")[0].id
    # a part that runs the recipe fault alone
    faults = [Fault(id=recipe_fault, family="training", dataset="mnist", architecture="lenet5", description="",
                    input_shape=[1, 28, 28], num_classes=10, seed=0, train_seconds=1.0, digests=digests)]
    with StudyTables(tmp_path / "ledger.sqlite") as tables:
        record_faults(spec, faults, tables)
        recorded = tables.faults("two")
    assert recorded[recipe_fault]["order"] == len(suite_recipes("quick")), recorded
