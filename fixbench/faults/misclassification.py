"""Misclassification faults (You et al.): a trained model plus its splits; the fault is the
repair-split inputs that the model gets wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fixbench.arrays import save_npz
from fixbench.faults.bundle import Fault
from fixbench.onnxio import Predictor


def build_misclassification_fault(fault_id: str, dataset: str, architecture: str, root: Path, seed: int,
                                  scale: float = 1.0, recipe_overrides: dict[str, Any] | None = None,
                                  description: str = "", progress=None) -> Fault:
    """Trains `architecture` on `dataset` (seeded) and writes the fault bundle into `root`."""
    from fixbench.data import get_dataset, load_splits
    from fixbench.zoo import default_recipe, train

    spec = get_dataset(dataset)
    splits = load_splits(dataset, seed=seed, scale=scale)
    recipe = default_recipe(architecture, **(recipe_overrides or {}))
    result = train(recipe, (splits.train.x, splits.train.y), (splits.valid.x, splits.valid.y), seed=seed,
                   num_classes=spec.num_classes, progress=progress)
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(result.onnx_bytes)
    for name, split in splits:
        save_npz(root / f"{name}.npz", split.arrays())
    predictor = Predictor(result.onnx_bytes)
    test_acc = float((predictor.predict(splits.test.x) == splits.test.y).mean() * 100)
    failing = int((predictor.predict(splits.repair.x) != splits.repair.y).sum())
    fault = Fault(
        id=fault_id, family="misclassification", dataset=dataset, architecture=architecture,
        description=description or f"{architecture} trained on {dataset}; the repair inputs it misclassifies",
        input_shape=[int(d) for d in spec.input_shape], num_classes=int(spec.num_classes), seed=seed,
        train_seconds=float(result.train_seconds), stand_in=bool(spec.stand_in),
        sensitive_attribute=spec.sensitive_attribute, recipe=recipe.to_dict(),
        ground_truth={"failing_repair_inputs": failing, "repair_inputs": int(len(splits.repair.y))},
        metrics={"test_accuracy": test_acc, "valid_accuracy": float(result.valid_accuracy or 0) * 100,
                 "repair_failing": float(failing), **{f"{k}_size": float(v) for k, v in splits.sizes().items()}},
        root=root,
    )
    if failing == 0:
        raise ValueError(f"fault {fault_id}: the trained model misclassifies no repair input; nothing to fix")
    fault.save()
    return fault


def failing_indices(model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.flatnonzero(Predictor(model_bytes).predict(x) != y)
