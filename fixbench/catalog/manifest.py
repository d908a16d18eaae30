"""`services/<name>/service.toml`: the one declaration of an approach's deployment.

Name, level, needs and parameters live in the approach class and are served by Describe; this
file holds only what a deployment must know before any service runs:

    layer = "sdk-torch"   # image layer it builds on: sdk | sdk-torch | sdk-tf | own
    gpu = false           # can use a CUDA device (the GPU override reserves one)
    replicas = 1          # default replicas in compose, Swarm and Kubernetes
    memory_mb = 4096      # container memory limit

The folder name is the approach's name, its DNS name (`<name>:50051`) and its image
(`fixbench/<name>`), so nothing else needs writing down."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "service.toml"
# sdk: numpy + onnxruntime; sdk-torch: the CPU torch layer; sdk-tf: TensorFlow CPU + the
# ONNX <-> Keras converters (fixbench/sdk/keras_bridge.py), no torch; own: the Dockerfile builds
# its own stack from fixbench/base (arachne's older numpy, VeRe's older torch).
LAYERS = ("sdk", "sdk-torch", "sdk-tf", "own")
# A DNS label, an image name and a compose service name at once.
NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
FIELDS = {"layer": str, "gpu": bool, "replicas": int, "memory_mb": int}
DEFAULTS = {"gpu": False, "replicas": 1, "memory_mb": 4096}


class ManifestError(ValueError):
    """A service folder whose manifest is missing or wrong; the message names file and key."""


@dataclass(frozen=True)
class ServiceManifest:
    name: str
    folder: Path
    layer: str
    gpu: bool = False
    replicas: int = 1
    memory_mb: int = 4096

    @property
    def requirements(self) -> Path:
        return self.folder / "requirements.txt"

    @property
    def script(self) -> Path:
        return self.folder / "approach.py"

    @property
    def network(self) -> str:
        """The internal network it shares with the store and the orchestrator only."""
        return f"repair-{self.name}"


def load_manifest(folder: str | Path) -> ServiceManifest:
    folder = Path(folder)
    path = folder / MANIFEST
    name = folder.name
    if not NAME_RE.match(name):
        raise ManifestError(f"{folder}: the folder name {name!r} must be a DNS label (lower-case letters, digits, '-')")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path} is missing: every approach folder declares its deployment there "
                            f"(layer, gpu, replicas, memory_mb; see services/_template/{MANIFEST})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ManifestError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(FIELDS)}")
    if "layer" not in data:
        raise ManifestError(f"{path}: 'layer' is required ({' | '.join(LAYERS)})")
    values = {**DEFAULTS, **data}
    for key, kind in FIELDS.items():
        value = values[key]
        # bool is an int in Python: `replicas = true` must not pass as 1
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ManifestError(f"{path}: {key} = {value!r} should be a {kind.__name__}")
    if values["layer"] not in LAYERS:
        raise ManifestError(f"{path}: layer = {values['layer']!r} is not one of {', '.join(LAYERS)}")
    if values["replicas"] < 1 or values["memory_mb"] < 128:
        raise ManifestError(f"{path}: replicas must be >= 1 and memory_mb >= 128")
    if not (folder / "approach.py").is_file():
        raise ManifestError(f"{folder}: no approach.py")
    return ServiceManifest(name=name, folder=folder, **values)


def discover(services_dir: str | Path) -> list[ServiceManifest]:
    """Every approach folder (one with approach.py; `_template` and other `_*` excluded),
    sorted by name."""
    root = Path(services_dir)
    return [load_manifest(p.parent) for p in sorted(root.glob("*/approach.py")) if not p.parent.name.startswith("_")]
