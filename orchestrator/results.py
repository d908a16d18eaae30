"""Tidy results (one row per job) from the ledger: results.csv, results.parquet, and the
table printed at the end of a study."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

import pandas as pd
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from fixbench.v1 import repair_pb2
from orchestrator.ledger import Ledger
from orchestrator.study_tables import StudyTables
from orchestrator.subjects import subjects_for

METRIC_COLUMNS = ("acc_before", "acc_after", "rr", "nfr", "dacc")


def results_frame(ledger: Ledger, study: str, keys: Collection[str] | None = None) -> pd.DataFrame:
    """One row per job: identity, the fault's subject (from the fault metadata recorded in
    the ledger file), status, metrics (phase-2 robustness merged in), times."""
    with StudyTables(ledger.path) as tables:
        # Only the jobs of the spec as it is now (a corrected spec has other job keys).
        keys = set(keys) if keys is not None else tables.current_jobs(study)
        faults = tables.faults(study)
        robustness = tables.robustness_metrics(study)
    subjects = subjects_for(faults)
    rows = []
    for row in ledger.rows(study):
        if keys is not None and row["key"] not in keys:
            continue
        result = json.loads(row["result_json"] or "{}")
        metrics = {**json.loads(row["metrics_json"] or "{}"), **robustness.get(row["key"], {})}
        fault = faults.get(row["fault_id"], {})
        rows.append({
            "study": row["study"], "approach": row["approach"], "approach_version": row["approach_version"],
            "level": row.get("level", ""),
            "fault_id": row["fault_id"], "subject": subjects.get(row["fault_id"], row["fault_id"]),
            "dataset": fault.get("dataset", ""), "architecture": fault.get("architecture", ""),
            "family": fault.get("family", ""), "stand_in": bool(fault.get("stand_in", False)),
            "seed": row["seed"], "state": row["state"],
            "status": row["status"] if row["state"] == "done" else f"PENDING ({row['status'] or 'not run'})",
            **{m: metrics.get(m) for m in METRIC_COLUMNS},
            "repair_seconds": result.get("repair_seconds"), "job_seconds": result.get("job_seconds"),
            "attempts": row["attempts"], "infra_errors": row["infra_errors"],
            "repaired_sha256": result.get("repaired_sha256") or "",
            # Whether the approach handed back a model other than the faulty one (older
            # ledgers lack the flag: a repaired digest or REPAIRED then stands for one).
            "model_changed": bool(result.get("model_changed", bool(result.get("repaired_sha256"))
                                                              or row["status"] == "REPAIRED")),
            "message": (row["message"] or "").splitlines()[0][:300] if row["message"] else "",
            # The recipe fields the diagnosis names, in its order (a localiser's ranking), as JSON.
            "diagnosed_fields": json.dumps([c.get("field", "") for c in
                                            (result.get("diagnosis") or {}).get("recipeChanges", [])]),
            "repaired_recipe": repaired_recipe_json(result),
            "params": row["params_json"], "job_key": row["key"],
            **{f"m_{k}": v for k, v in sorted(metrics.items()) if k not in METRIC_COLUMNS},
        })
    return pd.DataFrame(rows)


def repaired_recipe_json(result: dict) -> str:
    """The recipe behind a recipe-level approach's model (its diagnosis' repaired_recipe) with
    the proto's field names, every field present (proto3's JSON leaves out empty values, so a
    recipe that set dropout to 0 would otherwise look as if it had not touched dropout), as
    JSON; "" when the diagnosis holds none."""
    recipe = (result.get("diagnosis") or {}).get("repairedRecipe")
    if not recipe:
        return ""
    msg = json_format.ParseDict(recipe, repair_pb2.TrainingRecipe(), ignore_unknown_fields=True)
    values = {f.name: getattr(msg, f.name) for f in msg.DESCRIPTOR.fields}
    values["hidden_units"], values["options"] = list(values["hidden_units"]), dict(values["options"])
    return json.dumps(values, sort_keys=True)


def write_results(frame: pd.DataFrame, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv, parquet = out / "results.csv", out / "results.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet, index=False)
    return csv, parquet


def _mean_std(series: pd.Series) -> str:
    values = series.dropna().astype(float)
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def summary_table(frame: pd.DataFrame, title: str) -> Table:
    """Per approach × fault: status counts, accuracy, RR, NFR, ⇑ACC, time (mean ± std over seeds)."""
    table = Table(title=title)
    for col in ("approach", "fault", "jobs", "statuses", "acc before %", "acc after %", "RR %", "NFR %", "⇑ACC %", "time s"):
        table.add_column(col, justify="left" if col in ("approach", "fault", "statuses") else "right")
    if frame.empty:
        return table
    for (approach, fault), group in frame.groupby(["approach", "fault_id"], sort=True):
        statuses = ", ".join(f"{s} {n}" for s, n in group["status"].value_counts().sort_index().items())
        table.add_row(
            approach, fault, str(len(group)), statuses, _mean_std(group["acc_before"]), _mean_std(group["acc_after"]),
            _mean_std(group["rr"]), _mean_std(group["nfr"]), _mean_std(group["dacc"]), _mean_std(group["repair_seconds"]),
        )
    return table


def print_summary(frame: pd.DataFrame, title: str, console: Console | None = None) -> None:
    (console or Console()).print(summary_table(frame, title))
