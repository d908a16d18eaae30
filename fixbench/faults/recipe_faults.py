"""Training-recipe faults (Kim et al.): a recipe mutated by an operator, kept only when
statistically killed, with the unmutated recipe as the ground-truth fix.

Build of one fault:
1. the dataset's splits and the original recipe (the architecture's default + overrides);
2. the original trained N times (seeds seed … seed+N−1) → its test-accuracy distribution
   (shared between the mutants of one original within a process);
3. each candidate mutation in turn trained N times; the first that `kill_test` accepts is the
   fault (a candidate whose training diverges to non-finite weights has no model, so it is
   skipped and recorded);
4. the bundle: the mutant's model from the first seed, the four splits, the faulty recipe,
   and the ground truth (original recipe, its accuracies, the changed fields, p-value and
   effect size, every candidate tried).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fixbench.arrays import save_npz
from fixbench.faults.bundle import Fault
from fixbench.faults.errors import MutantNotKilled
from fixbench.faults.fault_spec import BuildProgress, FaultRecipe
from fixbench.faults.killing import kill_test
from fixbench.faults.operators import get_operator
from fixbench.faults.scales import repeats_for_scale
from fixbench.onnxio import Predictor


@dataclass(frozen=True)
class Run:
    """One training of a recipe: test / valid accuracy (%), seconds, and the model."""

    seed: int
    test_accuracy: float
    valid_accuracy: float
    train_seconds: float
    onnx_bytes: bytes


# Original-recipe runs keyed by (dataset, seed, scale, recipe, seeds): the mutants of one
# original share its repeats instead of retraining them per fault.
_ORIGINAL_RUNS: dict[str, list[Run]] = {}


def _train_runs(
    recipe, splits, num_classes: int, seeds: list[int], report: BuildProgress | None, done: int, total: int, label: str
) -> list[Run]:
    from fixbench.zoo import train

    runs = []
    for i, seed in enumerate(seeds):
        if report:
            report((done + i) / total, f"{label}: training repeat {i + 1}/{len(seeds)}")
        result = train(
            recipe,
            (splits.train.x, splits.train.y),
            (splits.valid.x, splits.valid.y),
            seed=seed,
            num_classes=num_classes,
        )
        acc = float((Predictor(result.onnx_bytes).predict(splits.test.x) == splits.test.y).mean() * 100)
        runs.append(
            Run(seed, acc, float(result.valid_accuracy or 0) * 100, float(result.train_seconds), result.onnx_bytes)
        )
    return runs


def build_recipe_fault(
    spec: FaultRecipe, root: Path, scale: float = 1.0, progress: BuildProgress | None = None
) -> Fault:
    """Builds training-recipe fault `spec` into `root` (see the module docstring)."""
    from fixbench.data import get_dataset, load_splits
    from fixbench.zoo import TrainingDiverged, default_recipe

    operator = get_operator(spec.operator or "")
    data_spec = get_dataset(spec.dataset)
    splits = load_splits(spec.dataset, seed=spec.seed, scale=scale)
    original = default_recipe(spec.architecture, **dict(spec.overrides))
    candidates = list(spec.candidates) or [{}]
    # Mutate every candidate first: a candidate that does not apply is a suite error, found
    # before any training time is spent.
    mutants = [operator.apply(original, params) for params in candidates]
    repeats = repeats_for_scale(scale)
    seeds = [spec.seed + i for i in range(repeats)]
    total = repeats * (1 + len(mutants))

    key = json.dumps([spec.dataset, spec.seed, scale, original.to_dict(), seeds], sort_keys=True)
    if key not in _ORIGINAL_RUNS:
        _ORIGINAL_RUNS[key] = _train_runs(
            original, splits, data_spec.num_classes, seeds, progress, 0, total, "original recipe"
        )
    original_runs = _ORIGINAL_RUNS[key]
    original_acc = [r.test_accuracy for r in original_runs]

    attempts: list[dict[str, Any]] = []
    chosen = None
    for index, (params, mutant) in enumerate(zip(candidates, mutants, strict=True)):
        label = f"{operator.name} {params or ''}".strip()
        try:
            runs = _train_runs(
                mutant, splits, data_spec.num_classes, seeds, progress, repeats * (1 + index), total, label
            )
        except TrainingDiverged as exc:
            attempts.append({"params": dict(params), "outcome": "diverged", "message": str(exc)})
            continue
        test = kill_test(original_acc, [r.test_accuracy for r in runs])
        attempts.append(
            {
                "params": dict(params),
                "outcome": "killed" if test.killed else "not killed",
                "accuracies": [r.test_accuracy for r in runs],
                **test.to_dict(),
            }
        )
        if test.killed:
            chosen = (params, mutant, runs, test)
            break
    if chosen is None:
        raise MutantNotKilled(
            f"fault {spec.id}: no candidate of operator {operator.name} was statistically killed on "
            f"{spec.dataset}/{spec.architecture} at scale {scale} ({repeats} repeats): {attempts}"
        )
    params, mutant, runs, test = chosen
    faulty = runs[0]
    if progress:
        progress(1.0, "writing the bundle")

    root.mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(faulty.onnx_bytes)
    for name, split in splits:
        save_npz(root / f"{name}.npz", split.arrays())
    failing = int((Predictor(faulty.onnx_bytes).predict(splits.repair.x) != splits.repair.y).sum())
    changed = [name for name, _, _ in mutant.diff(original)]
    fault = Fault(
        id=spec.id,
        family="training_recipe",
        dataset=spec.dataset,
        architecture=spec.architecture,
        description=spec.description or f"{operator.name} ({operator.title}) on {spec.architecture}/{spec.dataset}",
        input_shape=[int(d) for d in data_spec.input_shape],
        num_classes=int(data_spec.num_classes),
        seed=spec.seed,
        # The budget of recipe repairers is a multiple of this: the mean over the repeats,
        # which is steadier than one run on shared cores.
        train_seconds=float(np.mean([r.train_seconds for r in runs])),
        stand_in=bool(data_spec.stand_in),
        sensitive_attribute=data_spec.sensitive_attribute,
        operator=operator.name,
        recipe=mutant.to_dict(),
        ground_truth={
            "recipe": original.to_dict(),
            "changed_fields": changed,
            "operator": operator.name,
            "operator_title": operator.title,
            "operator_source": operator.source,
            "operator_params": dict(params),
            "fixed_accuracies": original_acc,
            "faulty_accuracies": [r.test_accuracy for r in runs],
            "fixed_train_seconds": float(np.mean([r.train_seconds for r in original_runs])),
            "seeds": seeds,
            "kill": test.to_dict(),
            "attempts": attempts,
            "failing_repair_inputs": failing,
            "repair_inputs": int(len(splits.repair.y)),
        },
        metrics={
            "test_accuracy": faulty.test_accuracy,
            "valid_accuracy": faulty.valid_accuracy,
            "faulty_mean_accuracy": test.mutant_mean,
            "fixed_mean_accuracy": test.original_mean,
            "p_value": test.p_value,
            "a12": test.a12,
            "repair_failing": float(failing),
            **{f"{k}_size": float(v) for k, v in splits.sizes().items()},
        },
        root=root,
    )
    if failing == 0:
        raise MutantNotKilled(f"fault {spec.id}: the faulty model misclassifies no repair input; nothing to fix")
    fault.save()
    return fault
