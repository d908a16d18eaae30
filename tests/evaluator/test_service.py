"""The service's `evaluate_models` entry point maps the library outcome onto the contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evaluator.errors import UnknownPropertyError
from evaluator.service import E, evaluate_models


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_ok_result_carries_metrics_notes_and_details(trained) -> None:
    x, y = trained["x_test"], trained["y_test"]
    group = (np.arange(len(y)) % 3).astype(np.int64)
    result = evaluate_models(
        trained["onnx"],
        trained["onnx_other"],
        x,
        y,
        {},
        group=group,
        dataset="digits",
        properties=["accuracy", "fairness"],
        seed=1,
    )
    assert result.status == E.EVALUATION_STATUS_OK
    assert {"acc_before", "rr", "aaod_after"} <= set(result.metrics)
    assert json.loads(result.details_json)["fairness"]["before"]["aaod_pairs"].keys() == {"0-1", "0-2", "1-2"}


def test_accuracy_floor_shorthand_and_same_bytes(trained) -> None:
    x, y = trained["x_test"], trained["y_test"]
    same = evaluate_models(trained["onnx"], trained["onnx"], x, y, {})
    assert same.status == E.EVALUATION_STATUS_OK and same.metrics["rr"] == 0.0
    strict = evaluate_models(trained["onnx"], trained["onnx_other"], x, y, {"accuracy_floor": 1.0})
    assert strict.status == E.EVALUATION_STATUS_CORRUPTED_OUTPUT and "accuracy collapsed" in strict.message


def test_unknown_property_raises(trained) -> None:
    x, y = trained["x_test"], trained["y_test"]
    with pytest.raises(UnknownPropertyError):
        evaluate_models(trained["onnx"], trained["onnx"], x, y, {}, properties=["speed"])
