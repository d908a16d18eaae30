"""Readers of the deployment files the tests in this folder check: compose.yaml, the Swarm
stack and the Kubernetes manifests, and the approaches they must all cover."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = REPO_ROOT / "deploy" / "swarm" / "stack.yaml"
KUBERNETES_DIR = REPO_ROOT / "deploy" / "kubernetes"
# Services that are no approach: the build-only layers and the platform's own services.
PLATFORM_SERVICES = {"base", "sdk", "sdk-torch", "sdk-tf", "platform", "store", "evaluator", "orchestrator"}


def approach_names() -> list[str]:
    """Every approach folder (services/<name>/approach.py), templates excluded."""
    return sorted(
        p.parent.name for p in (REPO_ROOT / "services").glob("*/approach.py") if not p.parent.name.startswith("_")
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict:
    return load_yaml(REPO_ROOT / "compose.yaml")


def compose_approaches() -> list[str]:
    """The approach services compose.yaml runs (every service but the platform's)."""
    return sorted(set(compose()["services"]) - PLATFORM_SERVICES)


def stack() -> dict:
    return load_yaml(STACK_FILE)


def kubernetes_files() -> list[Path]:
    """Manifest files (the kustomization is kustomize's, not a Kubernetes resource)."""
    return sorted(p for p in KUBERNETES_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def kubernetes_documents() -> list[tuple[str, dict]]:
    """(file name, resource) for every YAML document of every manifest file."""
    docs = []
    for path in kubernetes_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def env_pairs(text: str, field: str) -> dict[str, str]:
    """`a=x;b=y` (FIXBENCH_APPROACHES, FIXBENCH_EXPECT_REPLICAS) -> {a: x, b: y}."""
    pairs = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = part.partition("=")
        assert sep, f"{field} entry {part!r} is not key=value"
        pairs[key.strip()] = value.strip()
    return pairs
