"""`fixbench new-approach`: what it writes, what it refuses, and the conformance CLI's own
argument errors (the suite itself runs in test_services.py)."""

import ast
import re

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.cli_scaffold import TEMPLATE_FILES, ScaffoldError, class_name, new_approach, parse_params

runner = CliRunner()


def test_the_scaffold_fills_in_name_class_level_and_parameter_table(tmp_path):
    folder = new_approach("my-fix", level="layer", dest=tmp_path)
    assert folder == tmp_path / "my-fix" and sorted(p.name for p in folder.iterdir()) == sorted(TEMPLATE_FILES.values())
    for path in folder.iterdir():
        assert not re.search(r"__(NAME|CLASS|LEVEL|PARAMETER_TABLE)__", path.read_text()), path.name
    source = (folder / "approach.py").read_text()
    tree = ast.parse(source)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert "MyFixApproach" in classes
    assert 'name = "my-fix"' in source and 'level = "layer"' in source
    readme = (folder / "README.md").read_text()
    assert readme.startswith("# my-fix") and "| `steps` | int | `300` |" in readme
    dockerfile = (folder / "Dockerfile").read_text()
    assert "COPY services/my-fix /app/services/my-fix" in dockerfile and "FROM ${SDK_IMAGE}" in dockerfile
    # No staging folder is left behind next to the new service.
    assert [p.name for p in tmp_path.iterdir()] == ["my-fix"]


@pytest.mark.parametrize("name", ["Demo", "my_fix", "2fix", "fix-", "-fix", "my--fix", "", "a" * 41, "fix.v2"])
def test_bad_names_are_refused_and_nothing_is_written(tmp_path, name):
    with pytest.raises(ScaffoldError, match="not a lower-case slug"):
        new_approach(name, dest=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_refused_and_left_alone(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "mine.txt").write_text("keep me")
    with pytest.raises(ScaffoldError, match="already exists"):
        new_approach("demo", dest=tmp_path)
    assert [p.name for p in (tmp_path / "demo").iterdir()] == ["mine.txt"]


def test_bad_level_and_missing_dir_are_refused(tmp_path):
    with pytest.raises(ScaffoldError, match="level .pixel. is not one of model, layer, neuron, recipe, baseline"):
        new_approach("demo", level="pixel", dest=tmp_path)
    with pytest.raises(ScaffoldError, match="is not an existing folder"):
        new_approach("demo", dest=tmp_path / "nowhere")


def test_class_names_stay_clear_of_the_sdk_names():
    assert class_name("approach") == "ApproachApproach" and class_name("a-b2-c") == "AB2CApproach"


def test_cli_new_approach_creates_and_refuses(tmp_path):
    ok = runner.invoke(app, ["new-approach", "demo", "--dir", str(tmp_path), "--level", "baseline"])
    assert ok.exit_code == 0 and "created" in ok.output and (tmp_path / "demo" / "approach.py").is_file()
    again = runner.invoke(app, ["new-approach", "demo", "--dir", str(tmp_path)])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = runner.invoke(app, ["new-approach", "Bad_Name", "--dir", str(tmp_path)])
    assert bad.exit_code == 2 and "not a lower-case slug" in bad.output


@pytest.mark.parametrize("args,text", [
    ([], "either a service ADDRESS"),
    (["127.0.0.1:1", "--service", "services/noop"], "either a service ADDRESS"),
    (["127.0.0.1:1"], "--store ADDR is required"),
    (["--service", "services/noop", "--store", "127.0.0.1:1"], "--store goes with an ADDRESS"),
    (["--service", "tests"], "not an approach service folder"),
    (["127.0.0.1:1", "--store", "127.0.0.1:2", "--param", "novalue"], "must look like name=value"),
    (["127.0.0.1:1", "--store", "127.0.0.1:2", "--budget", "0"], "--budget must be positive"),
])
def test_cli_conformance_argument_errors(args, text):
    result = runner.invoke(app, ["conformance", *args])
    assert result.exit_code == 2 and text in " ".join(result.output.split()), result.output


def test_params_are_read_as_json_when_they_parse():
    assert parse_params(["epochs=3", "lr=0.5", "fast=true", "mode=fix", "s=\"7\""]) == {
        "epochs": 3, "lr": 0.5, "fast": True, "mode": "fix", "s": "7"}
