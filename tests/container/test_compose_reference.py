"""The reference study (issue 14) under `docker compose`: noop, finetune, arachne (its own
numpy 1.26 stack, no torch) and random-recipe, each in its own image, behind one contract;
an approach on a fault family it does not repair is UNADAPTABLE with a reason."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.container.dockerutil import ComposeProject, tail

pytestmark = [pytest.mark.container, pytest.mark.slow]


def test_reference_study_runs_with_each_approach_in_its_own_image(project: ComposeProject, results_dir: Path) -> None:
    project.env["FIXBENCH_STUDY"] = "studies/reference.yaml"
    proc = project.up_study("--abort-on-container-exit", "--exit-code-from", "orchestrator", timeout=1800, check=False)
    assert proc.returncode == 0, f"compose up exited with {proc.returncode}:\n{tail(proc.stdout, 80)}\n{tail(proc.stderr)}"
    frame = pd.read_csv(results_dir / "reference" / "results.csv")
    assert len(frame) == 4 * 2 * 3 and (frame["state"] == "done").all(), frame[["approach", "fault_id", "status"]]
    by = {(a, f): set(g["status"]) for (a, f), g in frame.groupby(["approach", "fault_id"])}
    assert by[("arachne", "mnist-lenet5")] <= {"REPAIRED", "NOT_REPAIRED"} and "REPAIRED" in by[("arachne", "mnist-lenet5")]
    assert by[("finetune", "mnist-lenet5")] == {"REPAIRED"}
    assert by[("random-recipe", "mnist-lenet5-hlr")] <= {"REPAIRED", "NOT_REPAIRED"}
    for approach, fault in [("arachne", "mnist-lenet5-hlr"), ("finetune", "mnist-lenet5-hlr"),
                            ("random-recipe", "mnist-lenet5")]:
        rows = frame[(frame.approach == approach) & (frame.fault_id == fault)]
        assert set(rows["status"]) == {"UNADAPTABLE"} and rows["message"].str.contains("fault").all()
    assert set(frame[frame.approach == "noop"]["status"]) == {"NOT_REPAIRED"}
