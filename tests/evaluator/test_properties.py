"""End-to-end evaluation of a job's models through `evaluator.properties.evaluate`."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from evaluator import parity
from evaluator.properties import CORRUPTED_OUTPUT, OK, check_settings, evaluate, resolve_properties
from fixbench.analysis.errors import (
    InvalidSettingError,
    LengthMismatchError,
    MissingSensitiveAttributeError,
    NotClassScoresError,
    UnknownPropertyError,
)

FAST_ROBUSTNESS = {"robustness": {"samples": 30, "steps": 10}}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _bias_shift(model_bytes: bytes, shift: float) -> bytes:
    model = onnx.load_from_string(model_bytes)
    init = model.graph.initializer[-1]
    arr = numpy_helper.to_array(init).copy()
    arr[0] += shift
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    return model.SerializeToString()


def test_default_properties(trained) -> None:
    x, y = trained["x_test"], trained["y_test"]
    out = evaluate(trained["onnx"], trained["onnx_other"], x, y, dataset="digits")
    assert out.status == OK and out.notes == {}
    for key in ("acc_before", "acc_after", "rr", "nfr", "dacc", "btc", "bec", "weights_changed", "delta_l2"):
        assert key in out.metrics
    assert out.metrics["weights_changed"] > 0 and out.metrics["architecture_changed"] == 0.0
    details = json.loads(out.details_json())
    assert set(details) == {"per_class", "change", "correct_before", "correct_after"} and "0" in details["per_class"]
    assert len(details["correct_after"]) == round(out.metrics["acc_after"] / 100 * len(y))
    assert len(details["correct_before"]) == round(out.metrics["acc_before"] / 100 * len(y))
    assert "asr_before" not in out.metrics and "aaod_before" not in out.metrics


def test_no_repaired_model_scores_the_original(trained) -> None:
    x, y = trained["x_test"], trained["y_test"]
    out = evaluate(
        trained["onnx"],
        None,
        x,
        y,
        properties=["accuracy", "change", "robustness"],
        dataset="digits",
        settings=FAST_ROBUSTNESS,
    )
    assert out.metrics["rr"] == 0.0 and out.metrics["nfr"] == 0.0 and out.metrics["weights_changed"] == 0.0
    assert out.metrics["dasr"] == 0.0 and out.metrics["asr_before"] == out.metrics["asr_after"]


def test_robustness_and_fairness(trained) -> None:
    x, y = trained["x_test"], trained["y_test"]
    group = (np.arange(len(y)) % 2).astype(np.int64)
    out = evaluate(
        trained["onnx"],
        trained["onnx_other"],
        x,
        y,
        group,
        dataset="digits",
        properties=["robustness", "fairness"],
        settings=FAST_ROBUSTNESS,
        seed=3,
    )
    assert out.status == OK, out.notes
    assert out.metrics["eps"] == 0.15 and out.metrics["robustness_samples"] == 30.0
    assert 0.0 <= out.metrics["asr_before"] <= 100.0
    assert out.metrics["dasr"] == pytest.approx(out.metrics["asr_after"] - out.metrics["asr_before"])
    assert out.metrics["parity_agreement_original"] == 1.0 and out.metrics["parity_agreement_repaired"] == 1.0
    assert {"aaod_before", "aaod_after", "daaod", "dpd_after", "eod_after"} <= set(out.metrics)
    again = evaluate(
        trained["onnx"],
        trained["onnx_other"],
        x,
        y,
        group,
        dataset="digits",
        properties=["robustness"],
        settings=FAST_ROBUSTNESS,
        seed=3,
    )
    assert again.metrics["asr_after"] == out.metrics["asr_after"]  # seeded


def test_parity_failure_makes_robustness_unsupported(trained, monkeypatch) -> None:
    x, y = trained["x_test"], trained["y_test"]
    real = parity.import_to_torch
    # Hand the attack a torch model that differs from the ONNX one onnxruntime runs.
    monkeypatch.setattr(
        parity, "import_to_torch", lambda m: real(onnx.load_from_string(_bias_shift(m.SerializeToString(), 3.0)))
    )
    out = evaluate(
        trained["onnx"],
        trained["onnx_other"],
        x,
        y,
        dataset="digits",
        properties=["robustness"],
        settings=FAST_ROBUSTNESS,
    )
    assert out.status == OK
    assert out.notes["robustness"].startswith("unsupported: original model fails the parity gate")
    assert "asr_before" not in out.metrics and out.metrics["parity_max_abs_diff_original"] > 1e-3
    monkeypatch.setattr(parity, "import_to_torch", lambda m: (None, "onnx2torch cannot convert the model: Foo"))
    out = evaluate(trained["onnx"], trained["onnx_other"], x, y, dataset="digits", properties=["robustness"])
    assert "onnx2torch cannot convert" in out.notes["robustness"] and "dasr" not in out.metrics


def test_corrupted_repairs(trained, gemm_model) -> None:
    x, y = trained["x_test"], trained["y_test"]
    collapsed = _bias_shift(trained["onnx"], 100.0)  # predicts class 0 for everything
    out = evaluate(trained["onnx"], collapsed, x, y, dataset="digits", properties=["accuracy", "robustness"])
    assert out.status == CORRUPTED_OUTPUT and "accuracy collapsed" in out.message
    assert out.metrics["acc_after"] < 20 and out.notes["robustness"].startswith("skipped")
    out = evaluate(trained["onnx"], gemm_model(np.ones((10, 64)), np.zeros(10)), x, y)
    assert out.status == CORRUPTED_OUTPUT and "input signature changed" in out.message
    out = evaluate(trained["onnx"], b"not onnx", x, y)
    assert out.status == CORRUPTED_OUTPUT and "not a valid ONNX model" in out.message
    out = evaluate(trained["onnx"], trained["onnx"], x, y, settings={"integrity": {"absolute_floor": 99.5}})
    assert out.status == CORRUPTED_OUTPUT


def test_bad_requests(trained) -> None:
    x, y = trained["x_test"], trained["y_test"]
    with pytest.raises(UnknownPropertyError, match="'robustnes'"):
        evaluate(trained["onnx"], None, x, y, properties=["robustnes"])
    with pytest.raises(LengthMismatchError, match="y=399"):
        evaluate(trained["onnx"], None, x, y[:-1])
    with pytest.raises(MissingSensitiveAttributeError, match="'race'"):
        evaluate(trained["onnx"], None, x, y, properties=["fairness"], sensitive_attribute="race")
    # No attribute named and none in the data: a note, not a refusal.
    out = evaluate(trained["onnx"], None, x, y, properties=["fairness"])
    assert out.notes["fairness"].startswith("unsupported") and "aaod_after" not in out.metrics
    with pytest.raises(InvalidSettingError, match=r"settings\.robustness\.epsilon"):
        evaluate(trained["onnx"], None, x, y, settings={"robustness": {"epsilon": 0.1}})
    with pytest.raises(InvalidSettingError, match="eps"):
        evaluate(trained["onnx"], None, x, y, properties=["robustness"], dataset="reuters")


def test_output_that_is_not_class_scores(gemm_model) -> None:
    model = onnx.load_from_string(gemm_model(np.ones((3, 4)), np.zeros(3)))
    model.graph.node[0].output[0] = "scores"
    model.graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"))
    model.graph.node.append(helper.make_node("Unsqueeze", ["scores", "axis"], ["output"]))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["batch", 1, 3]))
    x, y = np.zeros((5, 4), dtype=np.float32), np.zeros(5, dtype=np.int64)
    with pytest.raises(NotClassScoresError, match="rank 3"):
        evaluate(model.SerializeToString(), None, x, y)


def test_property_and_setting_resolution() -> None:
    assert resolve_properties([]) == ["accuracy", "compatibility", "change"]
    assert resolve_properties(["Fairness ", "accuracy"]) == ["accuracy", "fairness"]
    assert check_settings({"robustness": {"samples": 5.0}}) == {"robustness": {"samples": 5}}
    with pytest.raises(UnknownPropertyError, match="'speed'"):
        check_settings({"speed": {}})
    with pytest.raises(InvalidSettingError, match="boolean"):
        check_settings({"robustness": {"eps": True}})
    with pytest.raises(InvalidSettingError, match="samples"):
        check_settings({"robustness": {"samples": "many"}})


def test_details_json_keeps_index_lists_and_converts_the_rest() -> None:
    from evaluator.properties import EvaluationOutcome

    details = {"correct_after": [0, 2, 5], "mixed": [1, np.int64(2), float("nan"), True], 3: {"x": np.float32(0.5)}}
    assert json.loads(EvaluationOutcome(OK, details=details).details_json()) == {
        "correct_after": [0, 2, 5], "mixed": [1, 2, None, True], "3": {"x": 0.5}}


def test_a_validated_original_is_not_validated_again_but_another_is(trained, monkeypatch) -> None:
    import evaluator.properties as props

    x, y = trained["x_test"], trained["y_test"]
    first = evaluate(trained["onnx"], trained["onnx_other"], x, y, properties=["accuracy"], split_digest="d" * 64)
    validated = []
    monkeypatch.setattr(props, "load_model", lambda data: validated.append(len(data)) or onnx.load_from_string(data))
    # The original was validated by the first call: only the repaired model is validated now,
    # and the original's scores come from the same cache entry (keyed by the split's digest).
    again = evaluate(trained["onnx"], trained["onnx_other"], x, y, properties=["accuracy"], split_digest="d" * 64)
    assert validated == [len(trained["onnx_other"])]
    assert again.metrics == first.metrics and again.details_json() == first.details_json()
    other_original = _bias_shift(trained["onnx"], 0.25)
    evaluate(other_original, trained["onnx_other"], x, y, properties=["accuracy"], split_digest="d" * 64)
    assert validated[1:] == [len(other_original), len(trained["onnx_other"])]  # another original: validated
