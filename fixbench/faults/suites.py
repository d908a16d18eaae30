"""Fault suites and their content-addressed build cache. A fault is rebuilt only when its
build key (builder, dataset, architecture, seed, scale, overrides, code version) changes;
a fault is built in a temporary folder and renamed into place, so a killed build leaves
nothing half-written behind."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fixbench.faults.bundle import Fault, FaultError
from fixbench.faults.misclassification import build_misclassification_fault

BUILDER_VERSION = "1"


class UnknownSuiteError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class FaultRecipe:
    """How to build one fault of a suite."""

    id: str
    family: str
    dataset: str
    architecture: str
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def build_key(self, scale: float) -> str:
        content = {"v": BUILDER_VERSION, "id": self.id, "family": self.family, "dataset": self.dataset,
                   "architecture": self.architecture, "seed": self.seed, "overrides": self.overrides, "scale": scale}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


SUITES: dict[str, list[FaultRecipe]] = {
    "quick": [
        FaultRecipe("mnist-lenet5", "misclassification", "mnist5000", "lenet5", seed=0,
                    description="LeNet-5 trained on the 5,000 real MNIST digits; fix the repair inputs it misclassifies"),
    ],
}


def list_suites() -> list[str]:
    return sorted(SUITES)


def suite_recipes(name: str) -> list[FaultRecipe]:
    if name not in SUITES:
        raise UnknownSuiteError(f"unknown fault suite {name!r}; known: {', '.join(list_suites())}")
    return SUITES[name]


def _build(recipe: FaultRecipe, root: Path, scale: float, progress) -> Fault:
    if recipe.family == "misclassification":
        return build_misclassification_fault(recipe.id, recipe.dataset, recipe.architecture, root, recipe.seed,
                                             scale, recipe.overrides, recipe.description, progress)
    raise FaultError(f"fault {recipe.id}: no builder for family {recipe.family!r}")


def ensure_fault(recipe: FaultRecipe, bench_dir: str | Path, scale: float = 1.0,
                 progress: Callable | None = None) -> Fault:
    """The built fault from the cache, building it first when absent."""
    bench = Path(bench_dir)
    final = bench / "faults" / f"{recipe.id}@{recipe.build_key(scale)}"
    if (final / "fault.json").exists():
        return Fault.load(final)
    tmp = bench / "tmp" / f"{final.name}.{uuid.uuid4().hex[:8]}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        _build(recipe, tmp, scale, progress)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # built concurrently by another process: keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Fault.load(final)


def ensure_suite(name: str, bench_dir: str | Path, scale: float = 1.0,
                 on_fault: Callable[[FaultRecipe, int, int], None] | None = None) -> list[Fault]:
    recipes = suite_recipes(name)
    faults = []
    for i, recipe in enumerate(recipes):
        if on_fault:
            on_fault(recipe, i, len(recipes))
        faults.append(ensure_fault(recipe, bench_dir, scale))
    return faults
