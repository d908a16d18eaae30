"""Issue 18 item 5: a suite builds at every advertised scale: a mutant that is not
statistically killed at this scale is dropped, recorded (with why) in the suite's manifest,
and remembered so the next build does not retrain it; the rest of the suite is used. A study
that names some faults builds only those."""

from __future__ import annotations

import pytest

from fixbench.faults import suites as suites_module
from fixbench.faults.errors import MutantNotKilled
from fixbench.faults.fault_spec import FaultRecipe
from fixbench.faults.manifest import manifest_path, read_manifest
from fixbench.faults.suites import ensure_suite

SCALE = 0.25


@pytest.fixture
def two_faults(tiny_mis, monkeypatch):
    unkillable = FaultRecipe(**{**tiny_mis.__dict__, "id": "digits-unkilled"})
    monkeypatch.setitem(suites_module.SUITES, "tiny2", [unkillable, tiny_mis])
    calls = []
    real = suites_module._build

    def build(recipe, root, scale, progress):
        calls.append(recipe.id)
        if recipe.id == "digits-unkilled":
            raise MutantNotKilled("fault digits-unkilled: no candidate was statistically killed (p = 0.31)")
        return real(recipe, root, scale, progress)

    monkeypatch.setattr(suites_module, "_build", build)
    return calls


def test_an_unkilled_mutant_is_dropped_and_recorded(tmp_path, two_faults):
    faults = ensure_suite("tiny2", tmp_path, SCALE)
    assert [f.id for f in faults] == ["digits-tiny"]
    data = read_manifest(manifest_path(tmp_path, "tiny2", SCALE))
    assert [e["id"] for e in data["faults"]] == ["digits-tiny"]
    (dropped,) = data["dropped"]
    assert dropped["id"] == "digits-unkilled" and "statistically killed" in dropped["reason"]
    # Remembered: the next build neither retrains the dropped mutant nor the built fault.
    two_faults.clear()
    again = ensure_suite("tiny2", tmp_path, SCALE)
    assert [f.id for f in again] == ["digits-tiny"] and two_faults == []


def test_only_the_named_faults_are_built(tmp_path, two_faults):
    faults = ensure_suite("tiny2", tmp_path, SCALE, only={"digits-tiny"})
    assert [f.id for f in faults] == ["digits-tiny"] and two_faults == ["digits-tiny"]
    # A partial build is not the suite: no manifest claims it.
    assert not manifest_path(tmp_path, "tiny2", SCALE).exists()
