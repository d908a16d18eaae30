"""Fault-localisation scores for training-recipe faults (Kim et al. consider DeepFD and
DeepDiagnosis as localisers): a localiser's diagnosis ranks recipe fields (its
`recipe_changes`, in rank order); the fault's ground truth names the fields its mutation
changed. A job is a top-k hit when any of its first k ranked fields is a mutated field."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

# Fields that name the same knob twice over: a localiser naming one of them has found a
# mutation of the other (the output activation is its own field, the hidden one another).
_ALIASES: dict[str, set[str]] = {"regularization_weight": {"regularizer"}, "regularizer": {"regularization_weight"}}


def ranked_fields(value: Any) -> list[str]:
    """A ranked field list from the results frame's `diagnosed_fields` cell (a JSON list, a
    list, or empty / NaN for none)."""
    if value is None or (isinstance(value, float) and value != value):
        return []
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"diagnosed_fields: expected a list of recipe field names, got {value!r}")
    return [str(v) for v in value]


def hit_at(ranked: Sequence[str], truth: Sequence[str], k: int) -> bool:
    """True when one of the first `k` ranked fields is (or aliases) a mutated field."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    wanted = set(truth)
    for f in list(truth):
        wanted |= _ALIASES.get(f, set())
    return any(f in wanted for f in list(ranked)[:k])


def localisation_table(df: pd.DataFrame, faults: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame | None:
    """approach → jobs scored, top-1 and top-3 hit rates (and faults with a top-1 hit in most
    seeds), over the done jobs on training-recipe faults whose ground truth names the mutated
    fields. Only approaches whose diagnoses name recipe fields at all appear (repairers name
    the fields their patch changed, in recipe order, which is not a ranking). None when no job
    qualifies."""
    if "diagnosed_fields" not in df.columns:
        return None
    truth = {fid: list(meta.get("ground_truth", {}).get("changed_fields") or [])
             for fid, meta in faults.items() if meta.get("family") == "training_recipe"}
    truth = {fid: fields for fid, fields in truth.items() if fields}
    sub = df[df["fault_id"].isin(truth) & (df["state"] == "done")]
    rows = []
    for approach, runs in sub.groupby("approach"):
        ranked = [ranked_fields(v) for v in runs["diagnosed_fields"]]
        if not any(ranked):
            continue
        hits1 = [hit_at(r, truth[f], 1) for r, f in zip(ranked, runs["fault_id"], strict=True)]
        hits3 = [hit_at(r, truth[f], 3) for r, f in zip(ranked, runs["fault_id"], strict=True)]
        per_fault = pd.Series(hits1, index=runs["fault_id"].to_numpy()).groupby(level=0).mean()
        rows.append({"approach": approach, "jobs": len(runs), "faults": int(runs["fault_id"].nunique()),
                     "top-1 hit": f"{sum(hits1) / len(hits1):.2f}", "top-3 hit": f"{sum(hits3) / len(hits3):.2f}",
                     "faults localised (top-1, most seeds)": f"{int((per_fault > 0.5).sum())}/{len(per_fault)}"})
    if not rows:
        return None
    return pd.DataFrame(rows).set_index("approach")
