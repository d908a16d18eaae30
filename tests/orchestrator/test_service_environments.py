"""The local runtime runs each approach in an environment built from its own requirements:
arachne sees its numpy 1.26 / onnxruntime 1.19 stack while this process runs the project's;
an environment that cannot be built names the service and requirement, and the other
approaches still start."""

from __future__ import annotations

import re
from importlib.metadata import version

import pytest

from fixbench.catalog import load_manifest
from fixbench.catalog.environments import Environments, ServiceEnvironmentError, plan_for
from orchestrator import runtime_local
from orchestrator.runtime_local import LocalRuntime
from orchestrator.spec import SERVICES_DIR


def _stack_line(runtime: LocalRuntime, address: str) -> str:
    lines = [line for line in runtime.log_tail(address, 200).splitlines() if "stack: " in line]
    assert lines, runtime.log_tail(address, 40)
    return lines[-1]


def test_arachne_runs_on_its_own_stack_under_the_local_runtime(tmp_path):
    assert version("numpy").startswith("2.")  # the orchestrator's (project's) stack
    with LocalRuntime(tmp_path / "run") as runtime:
        addresses = runtime.start({"arachne": 1, "noop": 1})
        arachne = _stack_line(runtime, addresses.approaches["arachne"][0])
        noop = _stack_line(runtime, addresses.approaches["noop"][0])
    assert "numpy 1.26.4" in arachne and "onnxruntime 1.19.2" in arachne and "torch absent" in arachne
    assert f"numpy {version('numpy')}" in noop and f"onnxruntime {version('onnxruntime')}" in noop
    # each in its own environment, keyed by what went in
    assert re.search(r"\.fixbench/envs/arachne-[0-9a-f]{16}", arachne) and re.search(r"envs/noop-[0-9a-f]{16}", noop)


def test_the_environment_key_follows_the_requirements(tmp_path):
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "approach.py").write_text("")
    (folder / "service.toml").write_text('layer = "sdk"\n')
    (folder / "requirements.txt").write_text("six==1.16.0\n")
    first = plan_for(load_manifest(folder))
    (folder / "requirements.txt").write_text("six==1.17.0  # another pin\n")
    second = plan_for(load_manifest(folder))
    assert first.key != second.key and "six==1.17.0" in second.requirements
    torch = plan_for(load_manifest(SERVICES_DIR / "finetune"))
    # torch only ever from the CPU wheel on disk when there is one; never a CUDA build
    assert any(r.startswith("torch==") for r in torch.requirements)
    assert all(o.endswith("+cpu") for o in torch.overrides)


def test_an_unbuildable_environment_names_the_service_and_the_study_goes_on(tmp_path, monkeypatch):
    services = tmp_path / "services"
    for name in ("broken", "noop"):
        (services / name).mkdir(parents=True)
        (services / name / "service.toml").write_text('layer = "sdk"\n')
        (services / name / "approach.py").write_text((SERVICES_DIR / "noop" / "approach.py").read_text())
    (services / "broken" / "requirements.txt").write_text("fixbench-no-such-package-anywhere==0.0.1\n")
    monkeypatch.setattr(runtime_local, "SERVICES_DIR", services)
    with pytest.raises(ServiceEnvironmentError, match=r"service 'broken'.*fixbench-no-such-package-anywhere"):
        Environments(tmp_path / "envs").python(load_manifest(services / "broken"))
    with LocalRuntime(tmp_path / "run", environments=Environments(tmp_path / "envs")) as runtime:
        addresses = runtime.start({"broken": 1, "noop": 1})
    assert list(addresses.approaches) == ["noop"]
    assert "fixbench-no-such-package-anywhere" in runtime.unavailable["broken"]


def test_a_study_records_an_unstartable_approach_as_tool_error_and_runs_the_rest(tmp_path, monkeypatch):
    import pandas as pd
    from rich.console import Console

    from orchestrator import spec as spec_module
    from orchestrator.spec import load_spec
    from orchestrator.study import run_study

    services = tmp_path / "services"
    for name in ("broken", "noop"):
        (services / name).mkdir(parents=True)
        (services / name / "service.toml").write_text('layer = "sdk"\n')
        (services / name / "approach.py").write_text((SERVICES_DIR / "noop" / "approach.py").read_text())
    (services / "broken" / "requirements.txt").write_text("fixbench-no-such-package-anywhere==0.0.1\n")
    monkeypatch.setattr(runtime_local, "SERVICES_DIR", services)
    monkeypatch.setattr(spec_module, "SERVICES_DIR", services)
    monkeypatch.setenv("FIXBENCH_ENVS", str(tmp_path / "envs"))
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nsuite: quick\nseeds: [0]\napproaches:\n  - name: broken\n  - name: noop\n"
                    "budget: {wall_seconds: 60}\n")
    bench = SERVICES_DIR.parent / ".fixbench" / "bench"
    assert run_study(load_spec(path), tmp_path / "out", bench, Console(quiet=True)) == 0
    frame = pd.read_csv(tmp_path / "out" / "results.csv").set_index("approach")
    assert frame.loc["broken", "status"] == "TOOL_ERROR" and "fixbench-no-such-package-anywhere" in frame.loc["broken", "message"]
    assert frame.loc["noop", "status"] == "NOT_REPAIRED"


def test_approach_services_never_see_the_store_key(monkeypatch):
    from fixbench.launcher import child_env
    from fixbench.security.scope import KEY_ENV, KEY_FILE_ENV

    monkeypatch.setenv(KEY_FILE_ENV, "/somewhere/.store.key")
    monkeypatch.setenv(KEY_ENV, "secret")
    assert KEY_FILE_ENV in child_env(1)  # the store and the evaluator keep it
    withheld = child_env(1, (KEY_FILE_ENV, KEY_ENV))
    assert KEY_FILE_ENV not in withheld and KEY_ENV not in withheld
    runtime = LocalRuntime("/tmp/unused-runtime")
    popen_args = {}
    monkeypatch.setattr(runtime_local, "spawn", lambda *a, **k: popen_args.setdefault(a[1][0], k))
    runtime._popen("python", ["/x/services/noop/approach.py"], 0, None, None)
    runtime._popen("python", ["-m", "fixbench.artifacts"], 0, None, None)
    # approaches lose the key and the store's directory (tests/core/test_artifacts_shared.py);
    # the store keeps the key
    assert set(popen_args["/x/services/noop/approach.py"]["withhold"]) == {KEY_FILE_ENV, KEY_ENV, "FIXBENCH_STORE_DIR"}
    assert not {KEY_FILE_ENV, KEY_ENV} & set(popen_args["-m"]["withhold"])
