"""Issue 18 item 8: the whole spec is checked before any job runs — approach parameters
against each service's Describe, evaluation properties and settings against the evaluator,
seeds, duplicate keys, booleans where numbers belong — each refused with file, line and key."""

import pytest

from fixbench.v1 import repair_pb2
from orchestrator.spec import SpecError, check_approach_params, load_spec

GOOD = """name: t
suite: quick
seeds: [0, 1]
approaches:
  - name: finetune
    params: {epochs: 8}
budget:
  wall_seconds: 10
evaluation:
  properties: [accuracy]
"""


def write(tmp_path, text):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,expected", [
    (GOOD.replace("seeds: [0, 1]", "seeds: [-1]"), ":3: seeds.0: Input should be greater than or equal to 0"),
    (GOOD + "seeds: [3]\n", ":11: seeds: key given twice (first on line 3)"),
    (GOOD.replace("  wall_seconds: 10", "  wall_seconds: true"), ":8: budget.wall_seconds: Input should be a valid number"),
    (GOOD.replace("seeds: [0, 1]", "seeds: [0, 1]\nconcurrency: {total: true}"), ":4: concurrency.total: Input should be a valid integer"),
    (GOOD.replace("[accuracy]", "[acuracy]"), ":10: evaluation.properties: unknown property 'acuracy'"),
    (GOOD + "  settings: {robustness: {epsilonn: 0.1}}\n", ":11: evaluation.settings: settings.robustness.epsilonn is not a setting"),
])
def test_bad_specs_are_refused_with_file_line_and_key(tmp_path, text, expected):
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, text))
    assert expected in str(err.value) and "study.yaml" in str(err.value)


def _describe():
    return repair_pb2.DescribeResponse(name="finetune", version="1", parameters=[
        repair_pb2.ParameterSpec(name="epochs", type="int", default_json="3"),
        repair_pb2.ParameterSpec(name="lr", type="float", default_json="0.01"),
        repair_pb2.ParameterSpec(name="freeze", type="bool", default_json="false"),
        repair_pb2.ParameterSpec(name="preset", type="str", default_json='"default"'),
    ])


@pytest.mark.parametrize("params,expected", [
    ("{epoch: 8}", ":6: approaches.0.params.epoch: finetune has no parameter 'epoch'; it declares epochs, lr, freeze, preset"),
    ("{epochs: \"eight\"}", ":6: approaches.0.params.epochs: finetune's parameter epochs must be an integer, not 'eight'"),
    ("{epochs: 2.5}", "must be an integer, not 2.5"),
    ("{epochs: true}", "must be an integer, not True"),
    ("{lr: \"fast\"}", "must be a number, not 'fast'"),
    ("{freeze: 1}", "must be true or false, not 1"),
    ("{preset: 3}", "must be a string, not 3"),
])
def test_approach_parameters_are_checked_against_describe(tmp_path, params, expected):
    spec = load_spec(write(tmp_path, GOOD.replace("{epochs: 8}", params)))
    with pytest.raises(SpecError) as err:
        check_approach_params(spec, {"finetune": _describe()})
    assert expected in str(err.value)


def test_good_parameters_pass(tmp_path):
    spec = load_spec(write(tmp_path, GOOD.replace("{epochs: 8}", "{epochs: 8, lr: 1, freeze: true, preset: paper}")))
    check_approach_params(spec, {"finetune": _describe()})
