"""Localisation scores of recipe fault localisers: top-k hits against the mutated fields, and
the report table built from a results frame."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fixbench.analysis.localisation import hit_at, localisation_table, ranked_fields
from orchestrator.report import paper_tables


def test_hits_at_k():
    assert hit_at(["learning_rate", "optimizer"], ["learning_rate"], 1)
    assert not hit_at(["initializer", "optimizer", "learning_rate"], ["learning_rate"], 2)
    assert hit_at(["initializer", "optimizer", "learning_rate"], ["learning_rate"], 3)
    assert hit_at(["regularization_weight"], ["regularizer"], 1)  # one knob, two fields
    assert not hit_at([], ["loss"], 3)
    with pytest.raises(ValueError):
        hit_at(["loss"], ["loss"], 0)


def test_ranked_fields_reads_the_frame_cell():
    assert ranked_fields('["loss", "optimizer"]') == ["loss", "optimizer"]
    assert ranked_fields("") == [] and ranked_fields(float("nan")) == [] and ranked_fields(None) == []
    with pytest.raises(ValueError, match="diagnosed_fields"):
        ranked_fields('{"loss": 1}')


def _frame():
    rows = []
    for seed, (dd, fd) in enumerate([(["learning_rate", "optimizer"], ["optimizer", "learning_rate"]),
                                     (["initializer", "learning_rate"], ["loss", "activation", "epochs"])]):
        for approach, fields in (("deepdiagnosis", dd), ("deepfd", fd), ("noop", [])):
            rows.append({"approach": approach, "fault_id": "kim-m2", "seed": seed, "state": "done",
                         "status": "NOT_REPAIRED", "diagnosed_fields": json.dumps(fields), "subject": "kim-m2",
                         "acc_after": None, "repaired_sha256": ""})
    return pd.DataFrame(rows)


FAULTS = {"kim-m2": {"family": "training_recipe", "ground_truth": {"changed_fields": ["learning_rate"]}}}


def test_table_scores_each_localiser_and_leaves_out_approaches_naming_nothing():
    table = localisation_table(_frame(), FAULTS)
    assert list(table.index) == ["deepdiagnosis", "deepfd"]  # noop names no field
    assert table.loc["deepdiagnosis", "top-1 hit"] == "0.50" and table.loc["deepdiagnosis", "top-3 hit"] == "1.00"
    assert table.loc["deepfd", "top-1 hit"] == "0.00" and table.loc["deepfd", "top-3 hit"] == "0.50"
    assert table.loc["deepdiagnosis", "jobs"] == 2
    assert localisation_table(_frame().drop(columns="diagnosed_fields"), FAULTS) is None
    assert localisation_table(_frame(), {}) is None


def test_report_has_the_localisation_table():
    tables = paper_tables(_frame(), FAULTS)
    assert "localisation (recipe fields, top-1 / top-3)" in tables
