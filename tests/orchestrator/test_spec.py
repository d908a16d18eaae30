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


def test_set_overrides_apply_like_the_file(tmp_path):
    from orchestrator.spec import load_spec

    path = tmp_path / "s.yaml"
    path.write_text("name: s\nsuite: quick\nseeds: [0]\napproaches:\n  - name: noop\n  - name: finetune\n"
                    "    params: {epochs: 8}\nbudget: {wall_seconds: 60}\n")
    spec = load_spec(path, ["seeds=[0,1,2,3]", "approaches.finetune.params.epochs=4", "budget.wall_seconds=30",
                            "approaches.0.replicas=2"])
    assert spec.seeds == [0, 1, 2, 3] and spec.budget.wall_seconds == 30
    assert spec.approaches[1].params == {"epochs": 4} and spec.approaches[0].replicas == 2
    assert spec._overrides[0] == "seeds=[0,1,2,3]"


@pytest.mark.parametrize("override, error", [
    ("approaches.fintune.params.epochs=4", "--set approaches.fintune.params.epochs: no entry 'fintune'"),
    ("budget.wal_seconds=3", "--set budget.wal_seconds: budget.wal_seconds: unknown key"),
    ("seeds=[-1]", "--set seeds: seeds"),
    ("seeds", "expected KEY=VALUE"),
    ("seeds=[0, 1", "is not valid YAML"),
    ("name.x=1", "name is a str, not a mapping"),
])
def test_a_wrong_override_names_the_key(tmp_path, override, error):
    from orchestrator.spec import SpecError, load_spec

    path = tmp_path / "s.yaml"
    path.write_text("name: s\nsuite: quick\nseeds: [0]\napproaches:\n  - name: noop\nbudget: {wall_seconds: 60}\n")
    with pytest.raises(SpecError) as info:
        load_spec(path, [override])
    assert error in str(info.value)
