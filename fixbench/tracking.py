"""Experiment tracking: each job of a study as one MLflow run (parameters, metrics, status, and
the repaired ONNX model as an artifact), in a local MLflow store or on a tracking server.

    fixbench study mlflow results/quick                      # -> results/quick/mlruns
    fixbench study mlflow results/quick --uri http://mlflow.internal:5000

Optional: needs `mlflow` or `mlflow-skinny` installed (the project's dev dependencies have
the latter). Exporting twice adds nothing: a run carries its job key as a tag, and jobs
already exported are skipped. A local store is MLflow's file store, which MLflow 3 keeps in
maintenance mode behind MLFLOW_ALLOW_FILE_STORE; it is set for file URIs only."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from fixbench.results import load

JOB_TAG = "fixbench.job_key"
IDENTITY = ("study", "approach", "approach_version", "level", "fault_id", "subject", "dataset", "architecture", "seed")


class TrackingError(RuntimeError):
    """The exporter cannot run (MLflow missing, an unreachable server); the message says why."""


def _mlflow():
    try:
        import mlflow
        from mlflow.entities import Metric, Param
    except ImportError:
        raise TrackingError("MLflow is not installed: `pip install mlflow-skinny` (or mlflow)") from None
    return mlflow, Metric, Param


def _metrics(row: pd.Series) -> dict[str, float]:
    out = {}
    for col, value in row.items():
        if col in ("rr", "nfr", "dacc", "acc_before", "acc_after", "repair_seconds", "job_seconds") or str(col).startswith("m_"):
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                out[str(col).removeprefix("m_")] = float(value)
    return out


def _params(row: pd.Series) -> dict[str, str]:
    params = {k: str(row[k]) for k in IDENTITY if k in row.index and not pd.isna(row[k])}
    try:
        approach_params = json.loads(row.get("params") or "{}")
    except (TypeError, ValueError):
        approach_params = {}
    params.update({f"param.{k}": json.dumps(v) for k, v in sorted(approach_params.items())})
    return params


def export_mlflow(results_dir: str | Path, tracking_uri: str | None = None, experiment: str | None = None) -> int:
    """Writes one MLflow run per job of the study in `results_dir` (default store:
    `results_dir/mlruns`); returns the number of runs written."""
    results_dir = Path(results_dir).resolve()
    df = load(results_dir)
    mlflow, Metric, Param = _mlflow()
    uri = tracking_uri or (results_dir / "mlruns").as_uri()
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.MlflowClient(tracking_uri=uri)
    written = 0
    for study, rows in df.groupby("study", observed=True):
        name = experiment or f"fixbench-{study}"
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else client.create_experiment(name)
        done = {r.data.tags.get(JOB_TAG) for r in client.search_runs([experiment_id], max_results=50000)}
        for _, row in rows.iterrows():
            key = str(row.get("job_key", ""))
            if not key or key in done:
                continue
            run = client.create_run(experiment_id, run_name=f"{row['approach']}/{row['fault_id']}/seed{row['seed']}",
                                    tags={JOB_TAG: key, "fixbench.status": str(row["status"]),
                                          "fixbench.message": str(row.get("message") or "")[:5000]})
            now = int(time.time() * 1000)
            client.log_batch(run.info.run_id,
                             metrics=[Metric(k, v, now, 0) for k, v in _metrics(row).items()],
                             params=[Param(k, v[:6000]) for k, v in _params(row).items()])
            sha = str(row.get("repaired_sha256") or "")
            blob = results_dir / "store" / "blobs" / sha[:2] / sha
            if sha and blob.is_file():
                with tempfile.TemporaryDirectory() as tmp:
                    model = Path(tmp) / "repaired.onnx"
                    shutil.copyfile(blob, model)
                    client.log_artifact(run.info.run_id, str(model))
            client.set_terminated(run.info.run_id, "FINISHED" if str(row.get("state")) == "done" else "KILLED")
            written += 1
    return written
