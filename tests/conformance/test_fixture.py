"""The suite's own fault: deterministic bytes, a real misclassification fault, clear errors."""

import numpy as np
import pytest

from fixbench.arrays import load_split
from fixbench.conformance import FixtureError, build_fixture
from fixbench.conformance.fixture import SPLIT_SIZES
from fixbench.onnxio import Predictor, load_model


def test_same_seed_same_bytes_other_seed_other_data():
    a, b, c = build_fixture(0), build_fixture(0), build_fixture(1)
    assert a.model == b.model and a.splits == b.splits
    assert a.splits["repair"] != c.splits["repair"]


def test_the_model_is_valid_and_wrong_on_some_repair_inputs_only():
    fixture = build_fixture(0)
    load_model(fixture.model)
    x, y, group = load_split(fixture.splits["repair"])
    assert x.dtype == np.float32 and y.dtype == np.int64 and group is not None and len(y) == SPLIT_SIZES["repair"]
    predicted = Predictor(fixture.model, threads=1).predict(x)
    failing = int((predicted != y).sum())
    # The ONNX graph agrees with the fixture's own count, and the fault leaves most inputs right.
    assert failing == fixture.failing_repair_inputs and 0 < failing < len(y) // 2


def test_without_the_fault_the_model_is_nearly_perfect():
    x, y, _ = load_split(build_fixture(0).splits["valid"])
    clean = build_fixture(0, corruption=1e-6)  # the smallest fault still allowed
    assert (Predictor(clean.model, threads=1).predict(x) == y).mean() > 0.9


@pytest.mark.parametrize("corruption", [0.0, -1.0, float("nan")])
def test_bad_corruption_is_refused(corruption):
    with pytest.raises(FixtureError, match="corruption"):
        build_fixture(0, corruption=corruption)
