"""`fixbench bench build / list / show` on a tiny suite."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fixbench.faults import suites as suites_module
from orchestrator.cli import app

runner = CliRunner()


@pytest.fixture
def tiny_suite(monkeypatch, tiny_mis):
    monkeypatch.setitem(suites_module.SUITES, "tiny", [tiny_mis])
    return "tiny"


def test_build_list_show(tmp_path, tiny_suite):
    bench = str(tmp_path)
    result = runner.invoke(app, ["bench", "build", tiny_suite, "--scale", "0.25", "--bench", bench])
    assert result.exit_code == 0, result.output
    assert "digits-tiny: misclassification, digits/lenet5" in result.output
    assert (tmp_path / "tiny@0.25.manifest.json").exists()

    listed = runner.invoke(app, ["bench", "list", "--bench", bench])
    assert listed.exit_code == 0, listed.output
    assert "kim2023" in listed.output and "digits-tiny" in listed.output and "tiny@0.25" in listed.output

    shown = runner.invoke(app, ["bench", "show", "digits-tiny", "--bench", bench])
    assert shown.exit_code == 0, shown.output
    entry = json.loads(shown.output)
    assert (
        entry["id"] == "digits-tiny"
        and entry["suite"] == "tiny"
        and set(entry["digests"]) == {"model", "train", "valid", "repair", "test"}
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "build", "nope"], "unknown fault suite 'nope'"),
        (["bench", "build", "quick", "--scale", "huge"], "scale: 'huge'"),
        (["bench", "show", "nope"], "no built fault 'nope'"),
    ],
)
def test_bad_input_exits_2_with_a_named_error(tmp_path, args, message):
    result = runner.invoke(app, [*args, "--bench", str(tmp_path)])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
