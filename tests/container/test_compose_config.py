"""Fast checks of the container configuration (no Docker): compose.yaml lists every approach
service the orchestrator may be asked for, and the build helper pins.py
does what the Dockerfiles rely on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"docker_{name}", REPO_ROOT / "docker" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pins = _load("pins")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())


def approach_names() -> list[str]:
    return sorted(
        p.parent.name for p in (REPO_ROOT / "services").glob("*/approach.py") if not p.parent.name.startswith("_")
    )


@pytest.mark.parametrize("name", approach_names())
def test_every_approach_has_an_image_and_a_compose_service(compose: dict, name: str) -> None:
    assert (REPO_ROOT / "services" / name / "Dockerfile").is_file(), f"services/{name}/Dockerfile is missing"
    service = compose["services"].get(name)
    assert service is not None, f"compose.yaml has no service {name!r}"
    assert service["build"]["dockerfile"] == f"services/{name}/Dockerfile"
    assert service["restart"] in ("unless-stopped", "on-failure", "always")
    assert service.get("scale", 1) >= 1
    orchestrator = compose["services"]["orchestrator"]
    # the orchestrator finds it by its service name (<name>:50051) and shares its network
    assert "FIXBENCH_APPROACHES" not in orchestrator["environment"]
    assert f"repair-{name}" in orchestrator["networks"] and service["networks"] == [f"repair-{name}"]
    # not a dependency: `docker compose up orchestrator <names>` starts only the approaches named
    assert name not in orchestrator["depends_on"]


def test_build_only_layers_are_never_started_and_built_first(compose: dict) -> None:
    services = compose["services"]
    for layer in ("base", "sdk", "sdk-torch", "platform"):
        assert services[layer]["scale"] == 0, layer

    def upstream(name: str) -> set[str]:
        found: set[str] = set()
        for dep in services[name].get("depends_on", {}):
            found |= {dep} | upstream(dep)
        return found

    # Compose orders builds by depends_on, so every image a service builds FROM must be upstream
    for name, service in services.items():
        for arg in (service.get("build") or {}).get("args", {}).values():
            if isinstance(arg, str) and arg.startswith("fixbench/"):
                layer = arg.split("/", 1)[1].split(":", 1)[0]
                assert layer in upstream(name), f"{name} builds FROM {arg} but is not built after {layer}"


def test_pins_selects_renames_and_leaves_out(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\ndependencies = ["torch==2.13.0", "grpcio==1.85.1", "onnxruntime==1.32.0", "Py_YAML==6.0"]\n'
    )
    assert pins.project_pins(pyproject)["py-yaml"] == ("Py_YAML", "6.0")

    def lines(*argv: str) -> list[str]:
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert pins.main([str(pyproject), *argv]) == 0
        return out.getvalue().split()

    assert lines("grpcio", "onnxruntime", "--rename", "onnxruntime=onnxruntime-gpu") == [
        "grpcio==1.85.1",
        "onnxruntime-gpu==1.32.0",
    ]
    assert lines("--rest", "torch", "py-yaml") == ["grpcio==1.85.1", "onnxruntime==1.32.0"]
    with pytest.raises(SystemExit, match="nosuch"):
        pins.main([str(pyproject), "nosuch"])


def test_pins_rejects_an_unpinned_dependency(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["numpy>=2"]\n')
    with pytest.raises(SystemExit, match="numpy>=2"):
        pins.project_pins(pyproject)


def test_pins_reads_the_real_pyproject() -> None:
    found = pins.project_pins(REPO_ROOT / "pyproject.toml")
    for name in ("grpcio", "grpcio-health-checking", "protobuf", "numpy", "onnx", "onnxruntime", "torch"):
        assert name in found, f"docker/sdk.Dockerfile needs a {name}==... pin in pyproject.toml"


def test_gpu_override_swaps_the_stack_and_reserves_gpus() -> None:
    gpu = yaml.safe_load((REPO_ROOT / "deploy" / "compose.gpu.yaml").read_text())["services"]
    assert "cuda" in gpu["base"]["build"]["args"]["BASE_IMAGE"]
    for layer in ("sdk", "sdk-torch", "platform"):
        args = gpu[layer]["build"]["args"]
        assert args["ONNXRUNTIME_PACKAGE"] == "onnxruntime-gpu"
        assert "+cpu" not in args["TORCH_VERSION"] and "/whl/cu" in args["TORCH_INDEX_URL"]
    for name in ("evaluator", "finetune"):
        (device,) = gpu[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    # arachne's isolated CPU stack stays as it is
    assert "arachne" not in gpu


def test_only_the_platform_mounts_the_store_signing_key(compose: dict) -> None:
    """The store makes the key in volume store-key; the orchestrator and the evaluator read it
    from there; no approach mounts it or names it."""
    services = compose["services"]
    assert services["store"]["environment"]["FIXBENCH_STORE_KEY_CREATE"] == "1"
    assert "store-key:/data/keys" in services["store"]["volumes"]
    for name in ("orchestrator", "evaluator"):
        assert "store-key:/data/keys:ro" in services[name]["volumes"], name
        assert services[name]["environment"]["FIXBENCH_STORE_KEY_FILE"] == "/data/keys/store.key", name
        assert float(services[name]["environment"]["FIXBENCH_STORE_KEY_WAIT"]) > 0, name
    assert "store" in services["evaluator"]["depends_on"]  # the store's folder owns the new volume
    # The evaluator reads the store's files (verified) rather than streaming them: read-only,
    # and no approach mounts the store's volume.
    assert "store:/data/store:ro" in services["evaluator"]["volumes"]
    assert services["evaluator"]["environment"]["FIXBENCH_STORE_DIR"] == "/data/store"
    for name in approach_names():
        service = services[name]
        assert not any("store-key" in str(v) or "/data/store" in str(v) for v in service.get("volumes", [])), name
        assert "FIXBENCH_STORE_DIR" not in service.get("environment", {}), name
        assert not any(k.startswith("FIXBENCH_STORE_KEY") for k in service.get("environment", {})), name


@pytest.mark.parametrize("scale, expected", [("small", "--scale small --out r"), ("", "--out r")])
def test_the_orchestrator_entrypoint_passes_the_scale(tmp_path: Path, scale: str, expected: str) -> None:
    """FIXBENCH_SCALE becomes `study run --scale`: a compose user runs a study at another scale
    without editing it."""
    import os
    import subprocess

    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "FIXBENCH_STUDY": "studies/x.yaml",
           "FIXBENCH_SCALE": scale}
    proc = subprocess.run(["sh", str(REPO_ROOT / "docker" / "orchestrator-entrypoint.sh"), "--out", "r"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"-m orchestrator.cli study run studies/x.yaml --runtime external {expected}"
