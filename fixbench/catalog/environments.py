"""One Python environment per approach service, built from that service's own requirements,
so conflicting stacks stay apart without Docker too (arachne's numpy 1.26 / onnxruntime 1.19
beside the project's numpy 2).

What goes in mirrors the service's image layer (service.toml `layer`):
- `sdk`: the SDK's pins (grpcio, protobuf, numpy, onnx, onnxruntime from pyproject.toml) plus
  the service's requirements, the SDK pins as constraints (as docker/sdk.Dockerfile does);
- `sdk-torch`: the same plus the CPU torch wheel and onnx2torch (without its dependencies);
- `sdk-tf`: the SDK's pins plus TensorFlow CPU and the ONNX <-> Keras converters (TF_STACK,
  as docker/sdk-tf.Dockerfile installs them), no torch;
- `own`: the service's requirements.txt alone (it lists its whole stack).

The fixbench library itself comes from the source tree (PYTHONPATH), as in the images.
An environment is created once with `uv` (which links packages from its cache) and reused:
it lives under `.fixbench/envs/<name>-<key>`, the key a hash of everything that went in.
Torch comes from the CPU wheel pip's configuration points at (find-links), never a CUDA
build from an index."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fixbench.catalog.manifest import ServiceManifest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = REPO_ROOT / ".fixbench" / "envs"
SDK_PACKAGES = ("grpcio", "grpcio-health-checking", "grpcio-reflection", "grpcio-status", "protobuf", "numpy", "onnx",
                "onnxruntime")
ONNX2TORCH = "onnx2torch==1.5.15"
# The sdk-tf layer's stack (fixbench/sdk/keras_bridge.py); docker/sdk-tf.Dockerfile pins the same.
TF_STACK = ("tensorflow-cpu==2.21.0", "tf2onnx==1.17.0")
# onnx2keras declares `tensorflow`, which would pull the full 572 MB wheel beside
# tensorflow-cpu: it goes in without its dependencies (numpy and onnx are the SDK's).
TF_NODEPS = ("onnx2keras==0.0.25",)
MARKER = ".fixbench-env.json"


class ServiceEnvironmentError(RuntimeError):
    """An environment that could not be built; names the service and what failed."""


@dataclass(frozen=True)
class Plan:
    """What one service's environment is made of (its key hashes all of it)."""

    name: str
    layer: str
    requirements: tuple[str, ...]   # lines to install
    constraints: tuple[str, ...]    # pins nothing may move
    overrides: tuple[str, ...]      # forced versions (the local CPU torch wheel)
    no_deps: tuple[str, ...]        # installed afterwards without their dependencies
    find_links: tuple[str, ...]

    @property
    def key(self) -> str:
        blob = json.dumps([self.layer, self.requirements, self.constraints, self.overrides, self.no_deps,
                           sys.version_info[:3], sys.platform], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _requirement_lines(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        return ()
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return tuple(lines)


@lru_cache(maxsize=1)
def _project_pins() -> dict[str, tuple[str, str]]:
    """pyproject.toml's pins, read by docker/pins.py (the images' one source of truth)."""
    spec = importlib.util.spec_from_file_location("fixbench_docker_pins", REPO_ROOT / "docker" / "pins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.project_pins(REPO_ROOT / "pyproject.toml")


def sdk_pins() -> tuple[str, ...]:
    pins = _project_pins()
    return tuple(f"{pins[name][0]}=={pins[name][1]}" for name in SDK_PACKAGES)


@lru_cache(maxsize=1)
def pip_find_links() -> tuple[str, ...]:
    """The folders pip's configuration lists under find-links (where the CPU torch wheel lies
    on this kind of machine), so uv sees the same wheels pip does."""
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    links: list[str] = []
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip().endswith("find-links"):
            for item in value.strip().strip("'\"").split():
                if item not in links and Path(item.removeprefix("file://")).is_dir():
                    links.append(item)
    return tuple(links)


def local_torch_wheel(version: str, links: tuple[str, ...]) -> str | None:
    """`torch==<version>+cpu` when a CPU wheel of that version lies in a find-links folder."""
    for link in links:
        for wheel in Path(link.removeprefix("file://")).glob(f"torch-{version}+cpu-*.whl"):
            return f"torch=={version}+cpu" if wheel.is_file() else None
    return None


def plan_for(manifest: ServiceManifest) -> Plan:
    own = _requirement_lines(manifest.requirements)
    links = pip_find_links()
    if manifest.layer == "own":
        requirements, constraints = own, ()
    else:
        constraints = sdk_pins()
        requirements = constraints + own
    overrides: tuple[str, ...] = ()
    no_deps: tuple[str, ...] = ()
    if manifest.layer == "sdk-tf":
        named = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() for r in requirements}
        requirements += tuple(r for r in TF_STACK if r.split("==")[0] not in named)
        no_deps = TF_NODEPS
    torch_pin = next((r for r in requirements if re.match(r"torch\s*==", r)), None)
    if manifest.layer == "sdk-torch":
        torch_pin = torch_pin or f"torch=={_project_pins()['torch'][1]}"
        if torch_pin not in requirements:
            requirements += (torch_pin,)
        no_deps = (ONNX2TORCH,)
        requirements = tuple(r for r in requirements if not r.startswith("onnx2torch"))
    # Packages whose declared dependencies cannot be installed (hebo 0.3.6 pins a GPy that does
    # not build on Python 3.11) go in requirements-nodeps.txt: installed after the rest, as the
    # service's Dockerfile installs them, without their dependencies.
    no_deps += _requirement_lines(manifest.folder / "requirements-nodeps.txt")
    if torch_pin:
        version = torch_pin.split("==", 1)[1].strip().split("+", 1)[0]
        cpu = local_torch_wheel(version, links)
        overrides = (cpu,) if cpu else ()
    return Plan(manifest.name, manifest.layer, requirements, constraints, overrides, no_deps, links)


def uv_binary() -> str:
    """The uv next to this interpreter (a dev dependency of the project), else on PATH."""
    here = Path(sys.executable).parent / "uv"
    found = str(here) if here.exists() else shutil.which("uv")
    if not found:
        raise ServiceEnvironmentError("uv is not installed: `pip install uv` (a dev dependency in pyproject.toml)")
    return found


class Environments:
    """Creates (once) and finds each service's environment."""

    def __init__(self, root: str | Path | None = None, timeout: float = 900.0):
        self.root = Path(root or os.environ.get("FIXBENCH_ENVS") or DEFAULT_ROOT)
        self.timeout = timeout

    def path(self, manifest: ServiceManifest) -> Path:
        plan = plan_for(manifest)
        return self.root / f"{manifest.name}-{plan.key}"

    def python(self, manifest: ServiceManifest) -> str:
        """The interpreter of the service's environment, building it first if needed."""
        plan = plan_for(manifest)
        target = self.root / f"{manifest.name}-{plan.key}"
        python = target / "bin" / "python"
        if (target / MARKER).is_file():
            return str(python)
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{manifest.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # parallel tests and runtimes build it once
            if not (target / MARKER).is_file():
                self._build(plan, target)
        return str(python)

    def _build(self, plan: Plan, target: Path) -> None:
        started = time.monotonic()
        staging = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        uv = uv_binary()
        files = staging.with_name(staging.name + ".in")
        files.mkdir(parents=True, exist_ok=True)
        try:
            self._run(plan, [uv, "venv", "--quiet", "--python", sys.executable, str(staging)])
            python = str(staging / "bin" / "python")
            (files / "requirements.txt").write_text("\n".join(plan.requirements) + "\n")
            args = [uv, "pip", "install", "--quiet", "--python", python, "-r", str(files / "requirements.txt")]
            if plan.constraints:
                (files / "constraints.txt").write_text("\n".join(plan.constraints) + "\n")
                args += ["-c", str(files / "constraints.txt")]
            if plan.overrides:
                (files / "overrides.txt").write_text("\n".join(plan.overrides) + "\n")
                args += ["--override", str(files / "overrides.txt")]
            for link in plan.find_links:
                args += ["--find-links", link]
            self._run(plan, args)
            if plan.no_deps:
                self._run(plan, [uv, "pip", "install", "--quiet", "--python", python, "--no-deps", *plan.no_deps])
            (staging / MARKER).write_text(json.dumps({
                "service": plan.name, "layer": plan.layer, "key": plan.key, "requirements": plan.requirements,
                "overrides": plan.overrides, "seconds": round(time.monotonic() - started, 2)}, indent=1))
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(files, ignore_errors=True)

    def _run(self, plan: Plan, args: list[str]) -> None:
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=self.timeout,
                                  env={**os.environ, "VIRTUAL_ENV": ""})
        except subprocess.TimeoutExpired:
            raise ServiceEnvironmentError(f"building the environment of service {plan.name!r} took over "
                                          f"{self.timeout:.0f} s ({' '.join(args[:3])} …)") from None
        if proc.returncode != 0:
            detail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
            named = [r for r in plan.requirements if re.split(r"[=<>!~\[ ;]", r, maxsplit=1)[0].lower() in detail.lower()]
            which = f" (requirement {', '.join(named)})" if named else ""
            raise ServiceEnvironmentError(f"cannot build the environment of service {plan.name!r} from "
                                          f"services/{plan.name}/requirements.txt{which}:\n{detail}")
