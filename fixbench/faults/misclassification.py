"""Misclassification faults (You et al.): a trained model plus its splits; the fault is the
repair-split inputs that the model gets wrong. Optional injected causes (class imbalance,
group imbalance, label noise) give the model a known reason to fail; they are recorded."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fixbench.arrays import save_npz
from fixbench.faults.bundle import Fault
from fixbench.faults.causes import Causes, inject_causes
from fixbench.faults.fault_spec import BuildProgress
from fixbench.onnxio import Predictor


def _group_accuracies(
    predicted: np.ndarray, y: np.ndarray, group: np.ndarray | None, names: tuple[str, ...]
) -> dict[str, float]:
    if group is None:
        return {}
    return {
        f"test_accuracy[{names[g]}]": float((predicted[group == g] == y[group == g]).mean() * 100)
        for g in range(len(names))
        if (group == g).any()
    }


def build_misclassification_fault(
    fault_id: str,
    dataset: str,
    architecture: str,
    root: Path,
    seed: int,
    scale: float = 1.0,
    recipe_overrides: Mapping[str, Any] | None = None,
    description: str = "",
    progress: BuildProgress | None = None,
    causes: Mapping[str, Any] | None = None,
    history_epochs: int = 0,
) -> Fault:
    """Trains `architecture` on `dataset` (seeded, after injecting `causes` into the training
    split) and writes the fault bundle into `root`, with the ONNX checkpoints of the
    `history_epochs` epochs before the last (its training history)."""
    import torch

    from fixbench.data import get_dataset, load_splits
    from fixbench.data.splits import seeded_rng
    from fixbench.onnxio.torch_bridge import torch_to_onnx_bytes
    from fixbench.zoo import default_recipe, train

    spec = get_dataset(dataset)
    injected = Causes.from_dict(causes)
    splits = load_splits(dataset, seed=seed, scale=scale)
    recipe = default_recipe(architecture, **dict(recipe_overrides or {}))
    train_split, cause_record = inject_causes(
        splits.train, injected, spec.num_classes, spec.num_groups, seeded_rng(seed, dataset, "fault-causes")
    )

    def on_epoch(fraction: float, record: dict) -> None:
        if progress:
            progress(fraction, f"training epoch {record.get('epoch')}")

    checkpoints: list[tuple[int, bytes]] = []

    def keep_checkpoint(state) -> None:
        # Exporting runs one traced forward pass in eval mode and restores train mode: it
        # changes neither the weights nor any RNG, so the final model's bytes stay the same.
        if state.total_epochs - history_epochs <= state.epoch < state.total_epochs:
            example = torch.zeros(1, *train_split.x.shape[1:])
            checkpoints.append((state.epoch, torch_to_onnx_bytes(state.model, example)))

    result = train(
        recipe,
        (train_split.x, train_split.y),
        (splits.valid.x, splits.valid.y),
        seed=seed,
        num_classes=spec.num_classes,
        progress=on_epoch,
        on_epoch=keep_checkpoint if history_epochs else None,
    )
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(result.onnx_bytes)
    history = []
    for epoch, onnx_bytes in checkpoints:
        relative = f"history/epoch-{epoch}.onnx"
        (root / "history").mkdir(exist_ok=True)
        (root / relative).write_bytes(onnx_bytes)
        history.append({"epoch": epoch, "file": relative})
    for name, split in splits:
        save_npz(root / f"{name}.npz", (train_split if name == "train" else split).arrays())
    predictor = Predictor(result.onnx_bytes)
    test_pred = predictor.predict(splits.test.x)
    test_acc = float((test_pred == splits.test.y).mean() * 100)
    failing = int((predictor.predict(splits.repair.x) != splits.repair.y).sum())
    ground_truth: dict[str, Any] = {"failing_repair_inputs": failing, "repair_inputs": int(len(splits.repair.y))}
    if injected.any:
        ground_truth["causes"] = injected.to_dict()
        ground_truth["cause_effects"] = cause_record
    sizes = splits.sizes()
    sizes["train"] = len(train_split)
    fault = Fault(
        id=fault_id,
        family="misclassification",
        dataset=dataset,
        architecture=architecture,
        description=description or f"{architecture} trained on {dataset}; the repair inputs it misclassifies",
        input_shape=[int(d) for d in spec.input_shape],
        num_classes=int(spec.num_classes),
        seed=seed,
        train_seconds=float(result.train_seconds),
        stand_in=bool(spec.stand_in),
        sensitive_attribute=spec.sensitive_attribute,
        recipe=recipe.to_dict(),
        ground_truth=ground_truth,
        metrics={
            "test_accuracy": test_acc,
            "valid_accuracy": float(result.valid_accuracy or 0) * 100,
            "repair_failing": float(failing),
            **{f"{k}_size": float(v) for k, v in sizes.items()},
            **_group_accuracies(test_pred, splits.test.y, splits.test.group, spec.group_names),
        },
        history=history,
        root=root,
    )
    if failing == 0:
        raise ValueError(f"fault {fault_id}: the trained model misclassifies no repair input; nothing to fix")
    fault.save()
    return fault


def failing_indices(model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the inputs the model misclassifies."""
    return np.flatnonzero(Predictor(model_bytes).predict(x) != y)
