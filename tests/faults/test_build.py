"""Building faults: determinism, ground truth, the cache, manifests, and bad input."""

from __future__ import annotations

import json

import pytest

from fixbench.faults import (
    Fault,
    MutantNotKilled,
    OperatorNotApplicable,
    UnknownFaultError,
    UnknownSuiteError,
    ensure_fault,
    ensure_suite,
    find_recipe,
)
from fixbench.faults import suites as suites_module
from fixbench.faults.bundle import FaultError
from fixbench.faults.fault_spec import FaultRecipe
from fixbench.faults.manifest import find_fault_entry, manifest_path, read_manifest
from fixbench.zoo import RecipeError

SCALE = 0.25  # → 4 repeats per side; ~280 training digits


def _digests(fault: Fault) -> dict[str, str]:
    return {name: d["sha256"] for name, d in fault.digests.items()}


def test_same_seed_builds_byte_identical_bundles(tmp_path, tiny_mis, tiny_recipe_fault):
    first = {}
    for recipe in (tiny_mis, tiny_recipe_fault):
        a = ensure_fault(recipe, tmp_path / "a", SCALE)
        if recipe.family == "training_recipe":
            from fixbench.faults import recipe_faults

            recipe_faults._ORIGINAL_RUNS.clear()  # the second build retrains everything
        b = ensure_fault(recipe, tmp_path / "b", SCALE)
        assert set(_digests(a)) == {"model", "train", "valid", "repair", "test"}
        assert _digests(a) == _digests(b)
        for name in ("model", "train", "valid", "repair", "test"):
            assert a.path(name).read_bytes() == b.path(name).read_bytes()
        Fault.load(b.root, verify=True)
        first[recipe.id] = _digests(a)
    # Another seed gives another model and other splits.
    other = ensure_fault(FaultRecipe(**{**tiny_mis.__dict__, "seed": 4}), tmp_path / "c", SCALE)
    assert _digests(other)["model"] != first["digits-tiny"]["model"]
    assert _digests(other)["test"] != first["digits-tiny"]["test"]


def test_recipe_fault_records_ground_truth_and_kill_statistics(tmp_path, tiny_recipe_fault):
    fault = ensure_fault(tiny_recipe_fault, tmp_path, SCALE)
    gt = fault.ground_truth
    assert fault.family == "training_recipe" and fault.operator == "WCI"
    assert fault.recipe["initializer"] == "zeros"
    assert gt["recipe"]["initializer"] == "glorot_uniform" and gt["changed_fields"] == ["initializer"]
    assert len(gt["fixed_accuracies"]) == len(gt["faulty_accuracies"]) == 4
    assert gt["kill"]["killed"] and gt["kill"]["p_value"] < 0.05 and gt["kill"]["a12"] > 0.5
    assert min(gt["fixed_accuracies"]) > max(gt["faulty_accuracies"])
    assert fault.metrics["p_value"] == gt["kill"]["p_value"]
    assert fault.train_seconds > 0 and gt["fixed_train_seconds"] > 0
    assert 0 < gt["failing_repair_inputs"] <= gt["repair_inputs"]
    assert fault.metrics["test_accuracy"] == gt["faulty_accuracies"][0]


def test_mutant_that_does_not_hurt_is_discarded(tmp_path):
    harmless = FaultRecipe(
        "digits-hne",
        "training_recipe",
        "digits",
        "lenet5",
        seed=0,
        overrides={"epochs": 3},
        operator="HNE",
        candidates=({"epochs": 4},),
    )
    with pytest.raises(MutantNotKilled, match="no candidate of operator HNE was statistically killed"):
        ensure_fault(harmless, tmp_path, SCALE)
    # no fault bundle is written (the verdict itself is remembered, so it is not retrained)
    assert not any(p.name == "model.onnx" for p in tmp_path.rglob("*"))


def test_operator_that_does_not_apply_fails_before_training(tmp_path):
    bad = FaultRecipe("digits-d5", "training_recipe", "digits", "lenet5", operator="D5")
    with pytest.raises(OperatorNotApplicable, match="D5 does not apply: the recipe does not normalise"):
        ensure_fault(bad, tmp_path, SCALE)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"learnig_rate": 0.1}, "learnig_rate"), ({"epochs": 0}, "epochs"), ({"loss": "focal"}, "loss")],
)
def test_recipe_with_unknown_field_or_bad_value_names_it(tmp_path, overrides, field):
    bad = FaultRecipe("digits-bad", "misclassification", "digits", "lenet5", overrides=overrides)
    with pytest.raises(RecipeError, match=field):
        ensure_fault(bad, tmp_path, SCALE)


def test_build_killed_half_way_leaves_nothing_behind(tmp_path, tiny_mis, monkeypatch):
    real = suites_module.build_misclassification_fault

    def dies_after_writing(fault_id, dataset, architecture, root, *args, **kwargs):
        root.mkdir(parents=True, exist_ok=True)
        (root / "model.onnx").write_bytes(b"half a model")
        raise KeyboardInterrupt  # what a Ctrl-C mid-build looks like

    monkeypatch.setattr(suites_module, "build_misclassification_fault", dies_after_writing)
    with pytest.raises(KeyboardInterrupt):
        ensure_fault(tiny_mis, tmp_path, SCALE)
    assert not (tmp_path / "faults").exists() or not any((tmp_path / "faults").iterdir())
    assert not (tmp_path / "tmp").exists()
    # The next build starts clean and succeeds.
    monkeypatch.setattr(suites_module, "build_misclassification_fault", real)
    fault = ensure_fault(tiny_mis, tmp_path, SCALE)
    assert fault.root.name.startswith("digits-tiny@") and (fault.root / "fault.json").exists()


def test_suite_build_writes_manifest_and_reuses_the_cache(tmp_path, tiny_mis, monkeypatch):
    monkeypatch.setitem(suites_module.SUITES, "tiny", [tiny_mis])
    seen = []
    faults = ensure_suite(
        "tiny",
        tmp_path,
        SCALE,
        on_fault=lambda r, i, n: seen.append((r.id, i, n)),
        progress=lambda r, f, t: seen.append(round(f, 2)),
    )
    assert seen[0] == ("digits-tiny", 0, 1) and 1.0 in seen  # per-epoch progress reported
    path = manifest_path(tmp_path, "tiny", SCALE)
    assert path.name == "tiny@0.25.manifest.json"
    data = read_manifest(path)
    (entry,) = data["faults"]
    assert entry["digests"] == faults[0].digests
    assert entry["dataset"] == "digits" and entry["family"] == "misclassification"
    assert entry["ground_truth"]["failing_repair_inputs"] > 0 and entry["train_seconds"] > 0
    assert entry["path"] == f"faults/{faults[0].root.name}"
    assert find_fault_entry(tmp_path, "digits-tiny")[0]["suite"] == "tiny"
    # Cached: loading again trains nothing (no progress reported) and gives the same bundle.
    seen.clear()
    again = ensure_suite("tiny", tmp_path, SCALE, progress=lambda r, f, t: seen.append(f))
    assert seen == [] and again[0].digests == faults[0].digests


def test_causes_are_recorded_and_shape_the_training_split(tmp_path):
    recipe = FaultRecipe(
        "digits-imbalanced",
        "misclassification",
        "digits",
        "lenet5",
        seed=0,
        overrides={"epochs": 2},
        causes={"class_imbalance": 0.9, "label_noise": 0.1},
    )
    fault = ensure_fault(recipe, tmp_path, SCALE)
    assert fault.ground_truth["causes"] == {"class_imbalance": 0.9, "label_noise": 0.1}
    effects = fault.ground_truth["cause_effects"]
    assert effects["train_size_after"] == fault.metrics["train_size"] < effects["train_size_before"]
    from fixbench.arrays import load_split

    _, y, _ = load_split(fault.path("train"))
    assert len(y) == effects["train_size_after"]


def test_unknown_suite_and_fault_ids_are_named(tmp_path):
    with pytest.raises(UnknownSuiteError, match="unknown fault suite 'nope'; known: kim2023"):
        ensure_suite("nope", tmp_path)
    with pytest.raises(UnknownFaultError, match="unknown fault 'nope'"):
        find_recipe("nope")
    with pytest.raises(UnknownFaultError, match="no built fault 'nope'"):
        find_fault_entry(tmp_path, "nope")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id": "a/b"}, "fault id"),
        ({"family": "bugs"}, "family 'bugs'"),
        ({"family": "training_recipe"}, "needs an operator"),
        ({"operator": "HLR"}, "belong to training_recipe"),
        ({"family": "training_recipe", "operator": "HLR", "causes": {"label_noise": 0.1}}, "causes belong"),
        ({"scale_factor": 0}, "scale_factor"),
    ],
)
def test_bad_fault_recipes_are_refused(kwargs, message):
    base = {"id": "x", "family": "misclassification", "dataset": "digits", "architecture": "lenet5"}
    with pytest.raises(ValueError, match=message):
        FaultRecipe(**{**base, **kwargs})


def test_manifest_errors_name_the_file(tmp_path):
    from fixbench.faults import FaultError

    bad = tmp_path / "x@1.manifest.json"
    bad.write_text("{not json")
    with pytest.raises(FaultError, match="x@1.manifest.json: not a valid manifest"):
        read_manifest(bad)
    bad.write_text(json.dumps({"suite": "x"}))
    with pytest.raises(FaultError, match="no 'faults' list"):
        read_manifest(bad)


def test_keep_going_builds_the_rest_and_reports_every_failure(tmp_path, tiny_mis, monkeypatch):
    from fixbench.faults import SuiteBuildError

    broken = FaultRecipe("digits-d5", "training_recipe", "digits", "lenet5", operator="D5")
    monkeypatch.setitem(suites_module.SUITES, "mixed", [broken, tiny_mis])
    with pytest.raises(SuiteBuildError, match="1 of 2 faults failed.*digits-d5: OperatorNotApplicable") as info:
        ensure_suite("mixed", tmp_path, SCALE, keep_going=True)
    assert [fid for fid, _ in info.value.failures] == ["digits-d5"]
    assert [p.name.split("@")[0] for p in (tmp_path / "faults").iterdir()] == ["digits-tiny"]
    assert not manifest_path(tmp_path, "mixed", SCALE).exists()  # only complete suites get one
    with pytest.raises(OperatorNotApplicable):
        ensure_suite("mixed", tmp_path, SCALE)  # without keep_going the first failure stops it


def test_leftovers_of_a_dead_build_are_removed_and_live_ones_kept(tmp_path, tiny_mis):
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # that process has exited
    stale = tmp_path / "tmp" / f"other@0123456789abcdef.{dead_pid}.deadbeef"
    live = tmp_path / "tmp" / f"other@0123456789abcdef.{os.getppid()}.cafebabe"
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"partial")
    ensure_fault(tiny_mis, tmp_path, SCALE)
    assert not stale.exists() and live.exists()


def test_bytes_do_not_depend_on_the_callers_thread_count(tmp_path, tiny_mis):
    import torch

    a = ensure_fault(tiny_mis, tmp_path / "a", SCALE)
    torch.set_num_threads(2)
    b = ensure_fault(tiny_mis, tmp_path / "b", SCALE)
    assert torch.get_num_threads() == 2  # the caller's setting is restored
    assert _digests(a) == _digests(b)


def test_a_misclassification_bundle_keeps_its_training_history(tmp_path, tiny_mis):
    """The checkpoints of the epochs before the last are kept, by digest, without changing the
    model; a fault without history (a pretrained stand-in) has another build key."""
    with_history = FaultRecipe(**{**tiny_mis.__dict__, "overrides": {"epochs": 3}})
    without = FaultRecipe(**{**with_history.__dict__, "history_epochs": 0})
    assert with_history.build_key(SCALE) != without.build_key(SCALE)
    a = ensure_fault(with_history, tmp_path / "a", SCALE)
    b = ensure_fault(without, tmp_path / "b", SCALE)
    assert [e["epoch"] for e in a.history] == [1, 2] and b.history == []
    assert a.digests["model"] == b.digests["model"]  # keeping checkpoints leaves training alone
    for entry in a.history:
        data = (a.root / entry["file"]).read_bytes()
        assert len(data) == entry["size_bytes"] and data != a.path("model").read_bytes()
    Fault.load(a.root, verify=True)
    (a.root / a.history[0]["file"]).write_bytes(b"tampered")
    with pytest.raises(FaultError, match="does not match"):
        Fault.load(a.root, verify=True)
    with pytest.raises(ValueError, match="history_epochs"):
        FaultRecipe(**{**tiny_mis.__dict__, "history_epochs": -1})
