"""The MLflow exporter against a real local MLflow store: one run per job with its parameters,
metrics, status and the repaired ONNX model as an artifact; exporting again adds nothing."""

from __future__ import annotations

import hashlib
import os

import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")

from fixbench.tracking import JOB_TAG, export_mlflow  # noqa: E402


def test_each_job_becomes_one_run_with_its_model(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    model = b"\x08\x07fake-onnx-bytes"
    sha = hashlib.sha256(model).hexdigest()
    blob = tmp_path / "store" / "blobs" / sha[:2] / sha
    blob.parent.mkdir(parents=True)
    blob.write_bytes(model)
    pd.DataFrame([
        {"study": "quick", "approach": "finetune", "approach_version": "1.0.0", "level": "baseline",
         "fault_id": "mnist-lenet5", "subject": "MNIST", "seed": 0, "state": "done", "status": "REPAIRED",
         "rr": 41.5, "nfr": 0.8, "dacc": 1.2, "m_dasr": 0.5, "repaired_sha256": sha, "params": '{"epochs": 8}',
         "job_key": "k" * 64, "message": ""},
        {"study": "quick", "approach": "noop", "approach_version": "1.0.0", "level": "baseline",
         "fault_id": "mnist-lenet5", "subject": "MNIST", "seed": 0, "state": "done", "status": "NOT_REPAIRED",
         "rr": 0.0, "nfr": 0.0, "dacc": 0.0, "m_dasr": None, "repaired_sha256": "", "params": "{}",
         "job_key": "n" * 64, "message": "unchanged"},
    ]).to_parquet(tmp_path / "results.parquet")

    assert export_mlflow(tmp_path) == 2
    assert export_mlflow(tmp_path) == 0  # idempotent
    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("fixbench-quick")
    runs = {r.data.tags[JOB_TAG]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"k" * 64, "n" * 64}
    fine = runs["k" * 64]
    assert fine.data.params["approach"] == "finetune" and fine.data.params["param.epochs"] == "8"
    assert fine.data.metrics["rr"] == 41.5 and fine.data.metrics["dasr"] == 0.5
    assert fine.data.tags["fixbench.status"] == "REPAIRED" and fine.info.status == "FINISHED"
    artifacts = [a.path for a in client.list_artifacts(fine.info.run_id)]
    assert artifacts == ["repaired.onnx"]
    local = client.download_artifacts(fine.info.run_id, "repaired.onnx", str(tmp_path / "dl"))
    assert open(local, "rb").read() == model
    assert "dasr" not in runs["n" * 64].data.metrics and not client.list_artifacts(runs["n" * 64].info.run_id)
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"
