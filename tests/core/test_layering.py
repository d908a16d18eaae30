"""The dependency rules of the design (shared/design.md): the library imports none of the
orchestrator, the evaluator or the services; those two know approaches only through the
contract; a service imports only fixbench.sdk (and its own stack)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imports(folder: str):
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                yield path.relative_to(ROOT), name


@pytest.mark.parametrize("folder,forbidden", [
    ("fixbench", ("orchestrator", "evaluator", "services")),
    # the orchestrator talks to the evaluator through the contract only (design.md)
    ("orchestrator", ("services", "evaluator")),
    ("evaluator", ("services", "orchestrator")),
    ("services", ("orchestrator", "evaluator")),
])
def test_no_forbidden_imports(folder, forbidden):
    bad = [f"{path}: {name}" for path, name in imports(folder) if name.split(".")[0] in forbidden]
    assert not bad, bad


def test_services_use_only_the_sdk_of_the_library():
    # A service's own tests (test_*.py, e.g. the scaffold's conformance test) are no part of the
    # service: they may run the shared conformance suite against it.
    bad = [f"{path}: {name}" for path, name in imports("services")
           if name.split(".")[0] == "fixbench" and not name.startswith("fixbench.sdk")
           and not path.name.startswith("test_")]
    assert not bad, bad
