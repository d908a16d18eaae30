"""Every approach of services/ in one `docker compose` study (studies/compose-all.yaml): the
torch, numpy-only and TensorFlow images side by side behind the one contract, each job ending
in a status with a reason, and each approach refusing the other family's fault through Check."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fixbench.catalog import discover
from tests.container.dockerutil import REPO_ROOT, ComposeProject, run, tail

pytestmark = [pytest.mark.container, pytest.mark.slow]

STUDY = "compose-all"


def test_every_approach_runs_side_by_side_under_compose(project: ComposeProject, results_dir: Path) -> None:
    project.env["FIXBENCH_STUDY"] = f"studies/{STUDY}.yaml"
    proc = project("up", "--abort-on-container-exit", "--exit-code-from", "orchestrator", timeout=2400, check=False)
    assert proc.returncode == 0, f"compose up exited with {proc.returncode}:\n{tail(proc.stdout, 120)}\n{tail(proc.stderr)}"
    frame = pd.read_csv(results_dir / STUDY / "results.csv")
    every = {m.name for m in discover(REPO_ROOT / "services")}
    assert set(frame["approach"]) == every, sorted(every - set(frame["approach"]))
    assert (frame["state"] == "done").all(), frame[frame["state"] != "done"][["approach", "fault_id", "status", "message"]]
    # every outcome is a named status; anything but a scored one says why
    unscored = frame[~frame["status"].isin(["REPAIRED", "NOT_REPAIRED"])]
    assert unscored["message"].fillna("").str.len().gt(0).all(), unscored[["approach", "fault_id", "status"]]
    assert not (frame["status"] == "INFRA_ERROR").any()
    # the other family's fault is refused in Check, with the reason
    recipe_level = {"random-recipe", "autotrainer", "hebo", "bohb", "deepfd", "deepdiagnosis"}
    on_recipe_fault = frame[(frame["fault_id"] == "mnist-lenet5-hlr") & ~frame["approach"].isin(recipe_level | {"noop"})]
    assert len(on_recipe_fault) and (on_recipe_fault["status"] == "UNADAPTABLE").all(), on_recipe_fault[["approach", "status"]]
    on_quick_fault = frame[(frame["fault_id"] == "mnist-lenet5") & frame["approach"].isin(recipe_level)]
    assert (on_quick_fault["status"] == "UNADAPTABLE").all(), on_quick_fault[["approach", "status", "message"]]
    # What the reference study's own compose run checked (folded in here to build and start
    # fewer stacks): arachne's numpy-only image repairs behind the same contract as the torch
    # images, and the refusals name the fault family.
    by = {(a, f): set(g["status"]) for (a, f), g in frame.groupby(["approach", "fault_id"])}
    assert by[("arachne", "mnist-lenet5")] <= {"REPAIRED", "NOT_REPAIRED"}, by[("arachne", "mnist-lenet5")]
    assert by[("finetune", "mnist-lenet5")] <= {"REPAIRED", "NOT_REPAIRED"}
    assert by[("noop", "mnist-lenet5")] == {"NOT_REPAIRED"}
    refused = frame[(frame.approach.isin(["arachne", "finetune"])) & (frame.fault_id == "mnist-lenet5-hlr")]
    assert len(refused) == 2 and refused["message"].str.contains("fault").all(), refused[["approach", "message"]]


@pytest.mark.parametrize("service, has, lacks", [
    ("care-keras", "tensorflow", "torch"),
    ("arachne", "onnxruntime", "torch"),
    ("finetune", "torch", "tensorflow"),
])
def test_the_stacks_stay_apart(images: str, service: str, has: str, lacks: str) -> None:
    probe = (f"import importlib.util as u; assert u.find_spec('{has}'), 'no {has}'; "
             f"assert not u.find_spec('{lacks}'), '{lacks} leaked in'")
    proc = run(["docker", "run", "--rm", "--entrypoint", "python", f"fixbench/{service}:{images}", "-c", probe],
               timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
