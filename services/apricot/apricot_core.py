"""Apricot's core (Zhang & Chan, ASE 2019): reduced models and the weight adjustment.

Apricot's premise is that models trained on small subsets of the training data ("reduced
DL models", rDLMs) land in useful places of weight space: for an input the full model gets
wrong, the rDLMs that get it right point to where the full model's weights should move,
and those that get it wrong point away. The full model ("input DL model", iDLM) is nudged
towards the mean of the first group and away from the mean of the second, then retrained
briefly, and a nudge is kept only if validation accuracy improves.

Everything here is plain torch on an nn.Module and numpy arrays; the service (approach.py)
adds the SDK's data, budget and progress around it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

STRATEGIES = ("both-org", "corr-org", "incorr-org", "both-new", "corr-new", "incorr-new")


class CannotReinitialise(ValueError):
    """The model holds parameters in a layer that has no reset_parameters(), so reduced
    models cannot be trained from a fresh initialisation."""


def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """A copy of `model` with every parameter-holding layer freshly initialised (torch's own
    default initialisers, seeded), the starting point of one reduced model."""
    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    for name, module in fresh.named_modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        reset = getattr(module, "reset_parameters", None)
        if reset is None:
            raise CannotReinitialise(f"layer {name or type(module).__name__} ({type(module).__name__}) "
                                     "has parameters but no reset_parameters()")
        reset()
    # BatchNorm running statistics belong to the old data: start them afresh too.
    for module in fresh.modules():
        if hasattr(module, "reset_running_stats"):
            module.reset_running_stats()
    return fresh


def can_reinitialise(model: nn.Module) -> str | None:
    """None, or why reduced models cannot be built from this architecture."""
    for name, module in model.named_modules():
        if list(module.parameters(recurse=False)) and getattr(module, "reset_parameters", None) is None:
            return (f"layer {name or type(module).__name__} ({type(module).__name__}) has parameters but "
                    "no initialiser, so Apricot cannot train reduced models of this architecture")
    return None


def train_epochs(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, batch_size: int,
                 loss_fn: Callable, rng: np.random.Generator, should_stop: Callable[[], bool] = lambda: False,
                 optimiser: torch.optim.Optimizer | None = None) -> None:
    """Plain Adam training on hard labels (Apricot trains both rDLMs and the retraining step
    this way)."""
    optimiser = optimiser or torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for i in range(0, len(y), batch_size):
            if should_stop():
                return
            idx = order[i : i + batch_size]
            optimiser.zero_grad()
            loss = loss_fn(model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
            loss.backward()
            optimiser.step()
    model.eval()


def class_balanced_subset(y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a subset of `size` samples drawn evenly from every class present (the
    reimplementation samples a fixed number per label), without replacement."""
    classes = np.unique(y)
    size = min(size, len(y))
    per_class = max(1, size // len(classes))
    picks = []
    for c in classes:
        members = np.flatnonzero(y == c)
        picks.append(rng.choice(members, size=min(per_class, len(members)), replace=False))
    picked = np.concatenate(picks)
    if len(picked) < size:  # small classes left room: fill from the rest at random
        rest = np.setdiff1d(np.arange(len(y)), picked)
        picked = np.concatenate([picked, rng.choice(rest, size=size - len(picked), replace=False)])
    return np.sort(picked[:size])


@torch.no_grad()
def predictions(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    model.eval()
    out = [model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))).argmax(dim=1).numpy()
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def flat_weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@dataclass
class Adjustment:
    """What one adjustment did: how many rDLMs were right / wrong on the input."""

    correct: int
    incorrect: int
    applied: bool


def adjust_weights(base: Sequence[torch.Tensor], reduced: Sequence[Sequence[torch.Tensor]],
                   reduced_correct: Sequence[bool], lr: float, strategy: str = "both-org") -> tuple[list[torch.Tensor], Adjustment]:
    """One Apricot adjustment for one failing input.

    With w the iDLM's weights, c̄ the mean weights of the rDLMs that classify the input
    correctly (a of them) and ī the mean of those that do not (b of them), the paper's
    corrDiff = w − c̄ and incorrDiff = w − ī are weighted by a/(a+b) and b/(a+b). "both-org"
    moves w → w − lr·(a/(a+b)·corrDiff − b/(a+b)·incorrDiff): towards c̄, away from ī.
    ("-new" strategies flip the sign, "corr"/"incorr" use one side only; kept for the
    reimplementation's ablations.) When no rDLM, or every rDLM, is right, there is no
    direction: the weights are returned unchanged, as in the reimplementation.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    right = [w for w, ok in zip(reduced, reduced_correct, strict=True) if ok]
    wrong = [w for w, ok in zip(reduced, reduced_correct, strict=True) if not ok]
    a, b = len(right), len(wrong)
    if a == 0 or b == 0:
        return [w.clone() for w in base], Adjustment(a, b, False)
    p_corr, p_incorr = a / (a + b), b / (a + b)
    # The sign convention: "org" moves the original towards the correct rDLMs. w - c̄ points
    # away from them, so the step subtracts it.
    sign = -1.0 if strategy.endswith("org") else 1.0
    new = []
    for k, w in enumerate(base):
        corr_diff = w - torch.stack([r[k] for r in right]).mean(dim=0)
        incorr_diff = w - torch.stack([r[k] for r in wrong]).mean(dim=0)
        if strategy.startswith("both"):
            step = p_corr * corr_diff - p_incorr * incorr_diff
        elif strategy.startswith("corr"):
            step = p_corr * corr_diff
        else:
            step = -p_incorr * incorr_diff
        new.append(w + sign * lr * step)
    return new, Adjustment(a, b, True)


def set_weights(model: nn.Module, weights: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights, strict=True):
            p.copy_(w)


@dataclass
class Settings:
    reduced_models: int
    subset_size: int
    reduced_epochs: int
    reduced_lr: float
    adjust_lr: float
    strategy: str
    retrain_epochs: int
    retrain_lr: float
    batch_size: int
    retrain_samples: int
    rounds: int
    patience: int


@dataclass
class Result:
    model: nn.Module
    base_valid_acc: float
    best_valid_acc: float
    improvements: int
    batches: int
    adjustments: int
    skipped: int
    reduced_valid_acc: list[float]


def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((predictions(model, x) == y).mean()) if len(y) else 0.0


def train_reduced_models(model: nn.Module, train: tuple[np.ndarray, np.ndarray], valid: tuple[np.ndarray, np.ndarray],
                         s: Settings, loss_fn: Callable, rng: np.random.Generator, seed: int,
                         progress: Callable[[int, float], None] = lambda i, acc: None,
                         should_stop: Callable[[], bool] = lambda: False) -> list[nn.Module]:
    """The rDLMs: the iDLM's architecture, freshly initialised, each trained on its own
    class-balanced subset of the training data. Stops early when told to, returning only the
    rDLMs whose training finished."""
    x, y = train
    reduced = []
    for i in range(s.reduced_models):
        if should_stop():
            break
        idx = class_balanced_subset(y, s.subset_size, rng)
        r = reinitialise(model, seed=seed * 1000 + i)
        train_epochs(r, x[idx], y[idx], s.reduced_epochs, s.reduced_lr, s.batch_size, loss_fn, rng, should_stop)
        if should_stop():  # interrupted part-way: a half-trained rDLM would only add noise
            break
        reduced.append(r)
        progress(i, _accuracy(r, *valid))
    return reduced


def repair(model: nn.Module, reduced: Sequence[nn.Module], repair_split: tuple[np.ndarray, np.ndarray],
           train: tuple[np.ndarray, np.ndarray], valid: tuple[np.ndarray, np.ndarray], s: Settings,
           loss_fn: Callable, rng: np.random.Generator,
           progress: Callable[[int, int, float, float], None] = lambda b, n, acc, best: None,
           should_stop: Callable[[], bool] = lambda: False) -> Result:
    """Apricot's fixing loop (Algorithm 1 as the reimplementation runs it).

    The repair split is walked in batches of `batch_size`. In each batch every input the
    current model gets wrong is adjusted for, one after the other (the rDLMs' predictions
    are taken once per batch; their weights never change). Then the model is scored on
    validation: better than the best so far, it becomes the best; otherwise the best weights
    are restored. Then it is retrained for `retrain_epochs` on the repair split plus
    `retrain_samples` training samples. The loop makes `rounds` passes and stops after
    `patience` batches without improvement. The best model on validation is returned.
    """
    rx, ry = repair_split
    vx, vy = valid
    tx, ty = train
    reduced_weights = [flat_weights(r) for r in reduced]
    reduced_pred = np.stack([predictions(r, rx) for r in reduced]) if reduced else np.zeros((0, len(ry)), dtype=np.int64)
    base_acc = best_acc = _accuracy(model, vx, vy)
    best = flat_weights(model)
    optimiser = torch.optim.Adam(model.parameters(), lr=s.retrain_lr)
    improvements = batches = adjustments = skipped = 0
    last_improvement = 0
    n_batches = s.rounds * int(np.ceil(len(ry) / s.batch_size))
    for _round in range(s.rounds):
        order = rng.permutation(len(ry))
        for start in range(0, len(ry), s.batch_size):
            if should_stop() or batches - last_improvement > s.patience:
                break
            idx = order[start : start + s.batch_size]
            current = predictions(model, rx[idx])
            weights = flat_weights(model)
            for j, i in enumerate(idx):
                if current[j] == ry[i]:
                    continue
                ok = [bool(reduced_pred[m, i] == ry[i]) for m in range(len(reduced))]
                weights, adj = adjust_weights(weights, reduced_weights, ok, s.adjust_lr, s.strategy)
                adjustments += adj.applied
                skipped += not adj.applied
            set_weights(model, weights)
            batches += 1
            acc = _accuracy(model, vx, vy)
            if acc > best_acc:
                best_acc, best, last_improvement = acc, flat_weights(model), batches
                improvements += 1
            else:
                set_weights(model, best)
            if s.retrain_epochs > 0:
                take = min(len(ty), s.retrain_samples)
                pick = rng.choice(len(ty), size=take, replace=False) if take else np.zeros(0, dtype=np.int64)
                xx, yy = np.concatenate([rx, tx[pick]]), np.concatenate([ry, ty[pick]])
                train_epochs(model, xx, yy, s.retrain_epochs, s.retrain_lr, s.batch_size, loss_fn, rng, should_stop,
                             optimiser=optimiser)
                acc = _accuracy(model, vx, vy)
                # The reimplementation keeps the retrained weights as the next starting point and
                # only records them as best when the next batch's adjustment wins; scoring them
                # here as well means a retraining step that helps is never lost.
                if acc > best_acc:
                    best_acc, best, last_improvement = acc, flat_weights(model), batches
                    improvements += 1
            progress(batches, n_batches, acc, best_acc)
    set_weights(model, best)
    model.eval()
    return Result(model, base_acc, best_acc, improvements, batches, adjustments, skipped, [])
