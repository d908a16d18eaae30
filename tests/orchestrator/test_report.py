"""report.html and the paper tables from a ledger with crafted rows (every status, pending
jobs, robustness and fairness metrics, a stand-in subject, a training-recipe fault), and
`fixbench study report` rebuilding them from the ledger alone."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.ledger import Ledger
from orchestrator.report import (
    ReportError,
    build_html,
    kim_table,
    paper_tables,
    pareto_front,
    rebuild,
    report_frame,
    status_counts,
)
from orchestrator.results import results_frame
from orchestrator.study_tables import StudyTables
from orchestrator.subjects import subject_label, subjects_for

ROOT = Path(__file__).resolve().parents[2]
STUDY = "crafted"
FAULTS = {
    "mnist-lenet5": {"id": "mnist-lenet5", "family": "misclassification", "dataset": "mnist5000",
                     "architecture": "lenet5", "stand_in": False, "metrics": {"test_accuracy": 95.5}},
    "cifar10-vgg16": {"id": "cifar10-vgg16", "family": "misclassification", "dataset": "cifar10-standin",
                      "architecture": "vgg16", "stand_in": True, "stands_in_for": "cifar10",
                      "metrics": {"test_accuracy": 60.0}},
    "kim-m2": {"id": "kim-m2", "family": "training_recipe", "dataset": "mnist5000", "architecture": "lenet5",
               "stand_in": False, "operator": "HLR", "metrics": {"test_accuracy": 11.0},
               "ground_truth": {"faulty_accuracies": [11.0, 10.5, 11.2, 10.8, 11.1],
                                "fixed_accuracies": [95.0, 95.2, 94.8]}},
}
STATUSES = {"alpha": "REPAIRED", "beta": "NOT_REPAIRED", "gamma": "UNADAPTABLE", "delta": "CORRUPTED_OUTPUT",
            "eps": "TOOL_ERROR"}


def crafted_ledger(folder: Path) -> Path:
    """A study of 6 approaches × 3 faults × 3 seeds; 'pend' never finishes (one released
    with CANCELLED, the others never started)."""
    path = folder / "ledger.sqlite"
    ledger = Ledger(path)
    rng = np.random.default_rng(7)
    with StudyTables(path) as tables:
        for order, meta in enumerate(FAULTS.values()):
            tables.record_fault(STUDY, meta, order=order)
    for approach in [*STATUSES, "pend"]:
        for fault in FAULTS:
            for seed in range(3):
                key = f"{approach}-{fault}-{seed}"
                ledger.add(key, STUDY, approach, "1.0", fault, seed, {"p": 1})
                if approach == "pend":
                    if seed == 0:
                        ledger.start(key)
                        ledger.release(key, "cancelled (Ctrl-C); resumable", "CANCELLED")
                    continue
                ledger.start(key)
                status = STATUSES[approach]
                metrics = {}
                if status in ("REPAIRED", "NOT_REPAIRED"):
                    before = FAULTS[fault]["metrics"]["test_accuracy"]
                    gain = {"alpha": 8.0, "beta": 0.0}[approach] * (10 if fault == "kim-m2" else 1)
                    after = before + gain + rng.normal(0, 0.3)
                    metrics = {"acc_before": before, "acc_after": after, "rr": max(0.0, gain * 5 + rng.normal(0, 2)),
                               "nfr": abs(rng.normal(1.0 if approach == "alpha" else 0.0, 0.2)),
                               "dacc": (after - before) / before * 100, "dasr": rng.normal(3, 1),
                               "asr_before": 40.0, "asr_after": 43.0}
                    if fault == "cifar10-vgg16":
                        metrics.update({"aaod_before": 0.1, "aaod_after": 0.12, "daaod": 0.02 + rng.normal(0, 0.005)})
                result = {"repair_seconds": 10.0 ** rng.uniform(-1, 3), "job_seconds": 20.0}
                ledger.finish(key, status, f"{status} for {key}", result, metrics)
    ledger.close()
    return path


@pytest.fixture
def crafted(tmp_path):
    crafted_ledger(tmp_path)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    frame = results_frame(ledger, STUDY)
    ledger.close()
    return tmp_path, frame


def test_results_frame_carries_the_subject_and_fault_metadata(crafted):
    _, frame = crafted
    assert len(frame) == 6 * 3 * 3
    row = frame[frame.fault_id == "cifar10-vgg16"].iloc[0]
    assert row.subject == "CIFAR-10 (stand-in) → VGG-16" and row.stand_in and row.dataset == "cifar10-standin"
    assert set(frame[frame.fault_id == "kim-m2"].family) == {"training_recipe"}
    # Two faults share MNIST → LeNet-5, so each is shown by its fault id.
    assert set(frame.subject) == {"mnist-lenet5", "kim-m2", "CIFAR-10 (stand-in) → VGG-16"}
    assert frame[frame.approach == "pend"].status.str.startswith("PENDING").all()


def test_report_contains_every_plot_and_table(crafted):
    folder, frame = crafted
    with StudyTables(folder / "ledger.sqlite") as tables:
        faults = tables.faults(STUDY)
    page = build_html(frame, STUDY, faults, {"mnist-lenet5": {"indices": [1, 2, 3], "candidates": 700}})
    for heading in ("RR per approach × subject", "NFR per approach × subject", "RR per seed", "ΔASR / ΔAAOD heat map", "Accuracy vs side effect (Pareto)",
                    "Repair time (log axis)", "Outcomes per approach", "Tables in the papers' layout",
                    "Robustness inputs", "Subjects"):
        assert heading in page, heading
    assert page.count("<svg") >= 7
    # Self-contained: no script, no link to anything outside the page.
    assert "<script" not in page and not re.search(r"(src|href)=['\"]?https?:", page)
    assert "procedural stand-in" in page and "(stand-in)" in page
    for caption in ("RR", "NFR", "⇑ACC", "ΔASR", "ΔAAOD", "time", "repaired (Kim et al.)"):
        assert f"<caption>{caption}</caption>" in page, caption
    for outcome in ("UNADAPTABLE", "CORRUPTED_OUTPUT", "TOOL_ERROR", "PENDING", "REPAIRED", "NOT_REPAIRED"):
        assert outcome in page
    assert "not done yet (PENDING)" in page


def test_paper_tables_show_outcome_labels_and_letters(crafted):
    _, frame = crafted
    tables = paper_tables(frame, {k: {**v, "order": i} for i, (k, v) in enumerate(FAULTS.items())})
    rr = tables["RR"]
    assert list(rr.index) == ["alpha", "beta", "delta", "eps", "gamma"]  # pending-only approach has no done job
    assert rr.loc["gamma", "mnist-lenet5"] == "UNAD" and rr.loc["delta", "mnist-lenet5"] == "CORR"
    assert rr.loc["eps", "mnist-lenet5"] == "FAIL"
    # alpha's RR (~40) beats beta's (~0) on three seeds: different letter groups.
    assert rr.loc["alpha", "mnist-lenet5"].split()[-1] != rr.loc["beta", "mnist-lenet5"].split()[-1]
    assert "ΔAAOD" in tables and tables["ΔAAOD"].loc["alpha", "mnist-lenet5"] == "–"
    assert re.fullmatch(r"\d+(m\d\ds|s|h\d\dm|h)", tables["time"].loc["alpha", "mnist-lenet5"])


def test_kim_table_applies_the_significance_criterion(crafted):
    _, frame = crafted
    table = kim_table(report_frame(frame[frame.state == "done"]), FAULTS)
    assert table.loc["alpha", "kim-m2"].startswith("yes IR ")
    assert abs(float(table.loc["alpha", "kim-m2"].split()[-1]) - 0.95) < 0.1
    assert table.loc["beta", "kim-m2"].startswith("no") and table.loc["gamma", "kim-m2"] == "UNAD"
    assert table.loc["alpha", "repaired faults"] == "1/1"
    assert kim_table(report_frame(frame), {"mnist-lenet5": FAULTS["mnist-lenet5"]}) is None


def test_status_counts_include_pending_and_total(crafted):
    _, frame = crafted
    counts = status_counts(frame)
    assert counts.loc["pend", "PENDING"] == 9 and counts.loc["gamma", "UNADAPTABLE"] == 9
    assert (counts["total"] == 9).all()


def test_pareto_front_keeps_only_non_dominated_points():
    points = np.array([[90.0, 1.0], [95.0, 2.0], [89.0, 3.0], [95.0, 1.5], [80.0, 0.0]])
    assert pareto_front(points).tolist() == [4, 0, 3]


def test_subject_labels():
    assert subject_label({"dataset": "utkface-standin", "architecture": "facenet", "stand_in": True}) \
        == "UTKFace (stand-in) → FaceNet CNN"
    assert subject_label({"dataset": "mnist5000", "architecture": "lenet5"}) == "MNIST → LeNet-5"
    assert subjects_for({"a": {"dataset": "adult", "architecture": "mlp"}}) == {"a": "Adult → MLP"}


def test_rebuild_from_the_ledger_alone(crafted):
    folder, frame = crafted
    written = rebuild(folder)
    assert (folder / "report.html").exists() and (folder / "tables.md").exists()
    text = (folder / "tables.txt").read_text()
    assert "RR" in text and "UNAD" in text and "CORR" in text
    assert "| approach |" in (folder / "tables.md").read_text()
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "results.parquet"), frame)
    first = (folder / "report.html").read_bytes()
    rebuild(folder, STUDY)
    assert (folder / "report.html").read_bytes() == first  # deterministic: same ledger, same page
    assert f"{STUDY}:report" in written
    with pytest.raises(ReportError, match="holds no study 'nosuch'"):
        rebuild(folder, "nosuch")
    with pytest.raises(ReportError, match="no ledger at"):
        rebuild(folder / "empty")


def test_cli_study_report_rebuilds(tmp_path):
    crafted_ledger(tmp_path)
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "study", "report", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "report.html" in done.stdout
    assert len(pd.read_csv(tmp_path / "results.csv")) == 54
    missing = subprocess.run([sys.executable, "-m", "orchestrator.cli", "study", "report", str(tmp_path / "none")],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no ledger at" in missing.stdout


def test_baselines_come_from_the_recorded_level_not_from_names():
    from orchestrator.report import approach_order

    frame = pd.DataFrame({"approach": ["zz-floor", "arachne", "noop", "apricot"],
                          "level": ["baseline", "neuron", "baseline", "model"]})
    assert approach_order(frame) == ["apricot", "arachne", "noop", "zz-floor"]
    assert approach_order(frame, ["noop", "arachne"]) == ["arachne", "noop"]


def test_the_ledger_records_describe_level_and_upgrades_an_old_file(tmp_path):
    import sqlite3

    from orchestrator.ledger import Ledger

    path = tmp_path / "ledger.sqlite"
    with sqlite3.connect(path) as db:  # a ledger from before levels were recorded
        db.execute("CREATE TABLE jobs (key TEXT PRIMARY KEY, study TEXT NOT NULL, approach TEXT NOT NULL,"
                   " approach_version TEXT NOT NULL, fault_id TEXT NOT NULL, seed INTEGER NOT NULL,"
                   " params_json TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending', status TEXT, message TEXT,"
                   " attempts INTEGER NOT NULL DEFAULT 0, infra_errors INTEGER NOT NULL DEFAULT 0, result_json TEXT,"
                   " metrics_json TEXT, created REAL NOT NULL, started REAL, finished REAL)")
        db.execute("INSERT INTO jobs(key, study, approach, approach_version, fault_id, seed, params_json, created)"
                   " VALUES ('old', 's', 'noop', '1', 'f', 0, '{}', 0)")
    ledger = Ledger(path)
    ledger.add("new", "s", "finetune", "1", "f", 0, {}, level="baseline")
    levels = {r["key"]: r["level"] for r in ledger.rows("s")}
    ledger.close()
    assert levels == {"old": "", "new": "baseline"}


def test_pending_advice_says_when_resuming_cannot_help():
    from orchestrator.report import pending_note

    df = pd.DataFrame({"state": ["done", "pending", "pending", "pending"],
                       "status": ["REPAIRED", "PENDING (INFRA_ERROR)", "PENDING (FAULT_ERROR)", "PENDING (not run)"]})
    note = pending_note(df)
    assert note.startswith("3 jobs not done yet") and "2 of them" in note and "resume" in note
    assert "Resuming will not help the others (1 FAULT_ERROR)" in note
    only_stuck = pending_note(df.iloc[[0, 2]])
    assert "resume when" not in only_stuck and "1 FAULT_ERROR" in only_stuck
    assert pending_note(df.iloc[[0]]) == ""


def test_a_refused_attack_is_not_counted_as_attacked():
    from orchestrator.report import robustness_row

    common = {"indices": [1, 2, 3], "candidates": 40}
    refused = pd.DataFrame({"fault_id": ["f", "f"], "m_dasr": [None, None]})
    row = robustness_row(refused, "f", common)
    assert row["models attacked"].startswith("0: the evaluator refused") and "none attacked" in row["common test inputs"]
    attacked = pd.DataFrame({"fault_id": ["f", "f"], "m_dasr": [0.5, None]})
    assert robustness_row(attacked, "f", common)["models attacked"] == 1


def test_patch_table_counts_the_fields_the_repaired_recipe_changes_and_the_ground_truth_it_covers():
    import json

    from orchestrator.report import patch_table
    from orchestrator.results import repaired_recipe_json

    faulty = {"loss": "mse", "optimizer": "sgd", "learning_rate": 0.001, "dropout": 0.5, "epochs": 5,
              "hidden_units": [64], "options": {}}
    faults = {"kim-x": {"family": "training_recipe", "recipe": faulty, "order": 0,
                        "ground_truth": {"changed_fields": ["optimizer", "learning_rate"]}}}

    def run(approach, changed, recipe):
        return {"approach": approach, "level": "recipe", "fault_id": "kim-x", "outcome": "REPAIRED",
                "model_changed": changed, "repaired_sha256": "ab" if changed else "",
                "repaired_recipe": json.dumps({**faulty, **recipe}) if recipe is not None else ""}

    frame = pd.DataFrame([
        run("search", True, {"optimizer": "adam", "learning_rate": 0.01, "epochs": 9}),   # 3 fields, both true ones
        run("search", True, {"optimizer": "adam", "learning_rate": 0.001000000000001}),   # 1 field (float noise)
        run("chain", True, {"dropout": 0.0}),                                               # 1 field, no true one
        run("chain", False, {"dropout": 0.2}),                    # no new model: not a patch
        run("noop", False, None),
    ])
    table = patch_table(frame, faults)
    assert list(table.index) == ["chain", "search"]
    assert table.loc["search", "kim-x"] == "PC 2.0 sim 0.75"  # (3 + 1) / 2 fields; (1 + 0.5) / 2
    assert table.loc["chain", "kim-x"] == "PC 1.0 sim 0.00"
    assert table.loc["search", "all faults"] == "PC 2.0 sim 0.75"
    assert patch_table(frame.assign(repaired_recipe=""), faults) is None

    # The ledger's diagnosis is proto JSON: camelCase, empty values left out. Dropout set to 0
    # must read as a change of dropout, not as a recipe without one.
    result = {"diagnosis": {"repairedRecipe": {"loss": "mse", "optimizer": "sgd", "learningRate": 0.001,
                                               "epochs": 5, "hiddenUnits": [64]}}}
    recipe = json.loads(repaired_recipe_json(result))
    assert recipe["dropout"] == 0.0 and recipe["learning_rate"] == 0.001 and recipe["hidden_units"] == [64]
    assert repaired_recipe_json({"diagnosis": {}}) == "" and repaired_recipe_json({}) == ""
