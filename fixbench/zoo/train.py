"""The trainer: a recipe + data + seed → a trained model and its ONNX export.

Deterministic on CPU for a seed (same seed ⇒ byte-identical ONNX): initialisation draws from
a seeded generator, shuffling and the data faults from a numpy generator derived from the
seed, and dropout from torch's RNG seeded inside `fork_rng` (the caller's RNG state is left
as it was). Float reductions depend on torch's thread count, so byte-identity holds for the
same number of threads: pass `threads=` (e.g. 1) where results must match across machines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fixbench.onnxio.torch_bridge import torch_to_onnx_bytes
from fixbench.zoo.architectures import build_model
from fixbench.zoo.data_faults import apply_data_faults
from fixbench.zoo.layers import input_statistics, regularized_weights
from fixbench.zoo.losses import compute_loss
from fixbench.zoo.optimizers import make_optimizer
from fixbench.zoo.recipe import Recipe

ProgressFn = Callable[[float, dict], None]


@dataclass
class EpochState:
    """What an `on_epoch` monitor sees after each epoch (AutoTrainer, DeepFD and DeepDiagnosis
    watch training this way). `gradients` are (parameter name, gradient) of the epoch's first
    batch, taken before its optimiser step, as AutoTrainer's monitor takes them; empty when
    that batch's loss was not finite. `probe` is that batch's input, for activation statistics.
    `model` is the live module: a monitor may read it but must not change it."""

    epoch: int
    total_epochs: int
    record: dict
    model: nn.Module
    gradients: list[tuple[str, np.ndarray]]
    probe: torch.Tensor | None


# Returns True to stop training after this epoch (stop_reason "monitor").
EpochHook = Callable[[EpochState], bool | None]

_EVAL_BATCH = 512


class TrainingDiverged(RuntimeError):
    """Training produced non-finite weights, so there is no usable model to export."""

    def __init__(self, message: str, history: list[dict]):
        super().__init__(message)
        self.history = history


@dataclass
class TrainResult:
    """What `train` produced.

    history: one dict per epoch (epoch, loss, accuracy, valid_loss, valid_accuracy, batches,
    seconds), the last one with "stopped" = "diverged" or "deadline" when training ended early.
    stop_reason: "completed", "diverged" (NaN/Inf loss, weights still finite), "deadline", or
    "monitor" (an `on_epoch` monitor asked to stop).
    num_classes: width of the output layer; train_samples: training samples after the data faults.
    """

    module: nn.Module
    onnx_bytes: bytes
    train_seconds: float
    history: list[dict]
    valid_accuracy: float | None
    stop_reason: str = "completed"
    num_classes: int = 0
    train_samples: int = 0


def _check_split(name: str, split: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(split, (tuple, list)) or len(split) != 2:
        raise ValueError(f"{name}: expected a tuple (x, y), got {type(split).__name__}")
    x, y = np.asarray(split[0]), np.asarray(split[1])
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"{name}: x must be a non-empty batch (N, ...), got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{name}: y must hold one label per input ({len(x)}), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name}: y must hold integer class labels, got dtype {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"{name}: labels must be >= 0, found {int(y.min())}")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise ValueError(f"{name}: x must hold finite numbers")
    return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64)


def _evaluate(model: nn.Module, recipe: Recipe, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean loss without regularisation, accuracy) in eval mode."""
    model.eval()
    total, correct = 0.0, 0
    logits = recipe.last_activation == "linear"
    with torch.no_grad():
        for start in range(0, len(x), _EVAL_BATCH):
            out = model(x[start : start + _EVAL_BATCH])
            yb = y[start : start + _EVAL_BATCH]
            total += float(compute_loss(recipe.loss, out, yb, logits)) * len(yb)
            correct += int((out.argmax(dim=1) == yb).sum())
    return total / len(x), correct / len(x)


def _regularization(recipe: Recipe, weights: list[torch.Tensor]) -> torch.Tensor | float:
    if recipe.regularizer == "none" or recipe.regularization_weight == 0:
        return 0.0
    penalty = 0.0
    if recipe.regularizer in ("l1", "l1_l2"):
        penalty = penalty + sum(w.abs().sum() for w in weights)
    if recipe.regularizer in ("l2", "l1_l2"):
        penalty = penalty + sum(w.pow(2).sum() for w in weights)
    return recipe.regularization_weight * penalty


def train(
    recipe: Recipe,
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    deadline: float | None = None,
    num_classes: int | None = None,
    threads: int | None = None,
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Trains the recipe's model on `train` and exports it to ONNX.

    x arrays are float32 in the model's input layout (NCHW images), y int64 labels.
    `num_classes` defaults to 1 + the largest label in train/valid; pass it when a split may
    lack the last class. `progress(fraction, epoch_record)` is called after every epoch.
    `deadline` is a `time.monotonic()` value; training stops between batches once it passes
    (the model trained so far is still exported). A NaN/Inf loss stops training ("diverged");
    the model is exported if its weights are finite, else `TrainingDiverged` is raised.
    `threads` sets torch's intra-op threads for this call only (on shared CPUs one thread is
    often faster than oversubscribing); None leaves the process setting alone.
    `on_epoch(EpochState)` (optional) is called after every epoch with the first batch's
    gradients; returning True stops training there (stop_reason "monitor"). It only reads
    copies, so training and its outputs are the same with or without it.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe: expected a fixbench.zoo.Recipe, got {type(recipe).__name__}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads: expected a positive integer or None, got {threads!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    x_train, y_train = _check_split("train", train)
    valid_arrays = _check_split("valid", valid) if valid is not None else None
    if valid_arrays is not None and valid_arrays[0].shape[1:] != x_train.shape[1:]:
        raise ValueError(f"valid: inputs of shape {valid_arrays[0].shape[1:]} differ from train's {x_train.shape[1:]}")
    seen = int(max(y_train.max(), valid_arrays[1].max() if valid_arrays is not None else 0)) + 1
    if num_classes is None:
        num_classes = max(seen, 2)
    elif num_classes < seen:
        raise ValueError(f"num_classes: {num_classes} is smaller than the largest label + 1 ({seen})")

    data_rng, shuffle_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(2))
    x_fit, y_fit = apply_data_faults(x_train, y_train, recipe, num_classes, data_rng)
    stats = input_statistics(x_train) if recipe.normalize_input else None

    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = build_model(recipe, x_train.shape[1:], num_classes, stats, seed=int(seed))
            history, stop_reason, seconds = _fit(
                model, recipe, x_fit, y_fit, valid_arrays, shuffle_rng, progress, deadline, on_epoch
            )
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise TrainingDiverged(
                f"training diverged (lr={recipe.learning_rate:g}, optimizer={recipe.optimizer}): "
                "weights are not finite",
                history,
            )
        model.eval()
        onnx_bytes = torch_to_onnx_bytes(model, torch.zeros(1, *x_train.shape[1:]))
        valid_accuracy = None
        if valid_arrays is not None:
            _, valid_accuracy = _evaluate(model, recipe, *map(torch.from_numpy, valid_arrays))
    finally:
        torch.set_num_threads(threads_before)
    return TrainResult(
        module=model,
        onnx_bytes=onnx_bytes,
        train_seconds=seconds,
        history=history,
        valid_accuracy=valid_accuracy,
        stop_reason=stop_reason,
        num_classes=num_classes,
        train_samples=len(y_fit),
    )


def _fit(
    model: nn.Module,
    recipe: Recipe,
    x: np.ndarray,
    y: np.ndarray,
    valid: tuple[np.ndarray, np.ndarray] | None,
    rng: np.random.Generator,
    progress: ProgressFn | None,
    deadline: float | None,
    on_epoch: EpochHook | None = None,
) -> tuple[list[dict], str, float]:
    """The epoch loop; returns (history, stop reason, training seconds)."""
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    valid_t = tuple(map(torch.from_numpy, valid)) if valid is not None else None
    optimizer = make_optimizer(recipe.optimizer, model.parameters(), recipe.learning_rate)
    weights = regularized_weights(model)
    logits = recipe.last_activation == "linear"
    # BatchNorm cannot normalise a batch of one in training mode.
    has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    history: list[dict] = []
    stop_reason = "completed"
    started = time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        order = torch.from_numpy(rng.permutation(len(y)))
        loss_sum, correct, seen, batches = 0.0, 0, 0, 0
        first_grads: list[tuple[str, np.ndarray]] = []
        probe: torch.Tensor | None = None
        for start in range(0, len(y), recipe.batch_size):
            if deadline is not None and time.monotonic() >= deadline:
                stop_reason = "deadline"
                break
            idx = order[start : start + recipe.batch_size]
            if has_batchnorm and len(idx) < 2:
                continue
            xb, yb = x_t[idx], y_t[idx]
            if on_epoch is not None and probe is None:
                probe = xb
            out = model(xb)
            loss = compute_loss(recipe.loss, out, yb, logits) + _regularization(recipe, weights)
            if not torch.isfinite(loss):
                stop_reason = "diverged"
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if on_epoch is not None and batches == 0:
                first_grads = [
                    (name, p.grad.detach().numpy().copy() if p.grad is not None else np.zeros(tuple(p.shape), np.float32))
                    for name, p in model.named_parameters()
                ]
            optimizer.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((out.detach().argmax(dim=1) == yb).sum())
            seen += len(idx)
            batches += 1
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": loss_sum / seen if seen else math.nan,
            "accuracy": correct / seen if seen else math.nan,
            "batches": batches,
        }
        if stop_reason == "diverged":
            record["loss"] = math.nan
        if valid_t is not None and stop_reason != "diverged":
            record["valid_loss"], record["valid_accuracy"] = _evaluate(model, recipe, *valid_t)
        record["seconds"] = time.perf_counter() - started
        if stop_reason != "completed":
            record["stopped"] = stop_reason
        history.append(record)
        if progress is not None:
            progress(epoch / recipe.epochs, dict(record))
        if on_epoch is not None and on_epoch(
            EpochState(epoch, recipe.epochs, dict(record), model, first_grads, probe)
        ) and stop_reason == "completed":
            stop_reason = "monitor"
            history[-1]["stopped"] = stop_reason
        if stop_reason != "completed":
            break
    return history, stop_reason, time.perf_counter() - started
