"""Study specs: a malformed spec names the file, the key and the line."""

import pytest

from orchestrator.spec import SpecError, load_spec

GOOD = """name: t
suite: quick
seeds: [0, 1]
approaches:
  - name: noop
budget:
  wall_seconds: 10
"""


def write(tmp_path, text):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_good_spec_loads(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.seeds == [0, 1] and spec.approaches[0].name == "noop" and spec.concurrency.total == 2


@pytest.mark.parametrize("text,expected", [
    (GOOD.replace("  - name: noop", "  - name: nosuch"), ":5: approaches.0.name: unknown approach 'nosuch'"),
    (GOOD + "colour: red\n", ":8: colour: unknown key"),
    (GOOD.replace("  wall_seconds: 10", "  wall_seconds: -1"), ":7: budget.wall_seconds: Input should be greater than 0"),
    (GOOD.replace("seeds: [0, 1]", "seeds: [1, 1]"), ":3: seeds: seeds must be distinct"),
    (GOOD.replace("budget:\n  wall_seconds: 10\n", ""), "budget: Field required"),
    ("name: [unclosed", "not valid YAML"),
    ("- a\n- b\n", "a study spec is a mapping"),
])
def test_bad_specs_name_key_and_line(tmp_path, text, expected):
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, text))
    assert expected in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="cannot read study spec"):
        load_spec(tmp_path / "nope.yaml")
