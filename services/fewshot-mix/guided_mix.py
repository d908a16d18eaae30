"""Few-shot guided mix (X. Ren, B. Yu, H. Qi, F. Juefei-Xu, Z. Li, W. Xue, L. Ma, J. Zhao,
"Few-Shot Guided Mix for DNN Repairing", ICSME 2020): the variant implemented here.

The few failure samples (repair inputs the faulty model misclassifies, with their true
labels) are too few to retrain on directly without over-fitting, so they *guide* a
mixup-style augmentation of the training data:

1. Few-shot expansion: every failure sample is expanded into `expand` light variants
   (random shifts of up to `shift` pixels for images, small Gaussian noise otherwise), so
   that a handful of failures give a usable pool.
2. Guided mix: each mixed sample pairs one failure-pool sample x_f (label y_f) with a
   training sample x_t (label y_t). With probability `same_class_prob` the partner is drawn
   from the failure's own (target) class, otherwise from the whole training split. The
   mixing weight is λ ~ Beta(α, α) folded so that the failure dominates:
   λ_f = max(λ, 1 − λ). The sample is x = λ_f x_f + (1 − λ_f) x_t with the soft label
   λ_f · onehot(y_f) + (1 − λ_f) · onehot(y_t) (for a same-class partner, simply y_f).
3. Retraining: the model is fine-tuned on the clean training slice and the repair split
   (hard labels) together with the mixed samples (soft labels), keeping the epoch with the
   best validation accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def expand_failures(x: np.ndarray, y: np.ndarray, expand: int, shift: int, noise: float,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The failure samples plus `expand` jittered copies of each. Inputs with two trailing
    spatial axes (C, H, W or H, W) are shifted by up to `shift` pixels (zero fill); others
    get Gaussian noise of standard deviation `noise` × the feature's spread."""
    if expand <= 0 or len(y) == 0:
        return x.copy(), y.copy()
    copies, labels = [x], [y]
    image = x.ndim >= 3
    scale = x.reshape(len(x), -1).std(axis=0).reshape(x.shape[1:]) if len(x) > 1 else np.ones(x.shape[1:], x.dtype)
    for _ in range(expand):
        if image and shift > 0:
            out = np.zeros_like(x)
            for i in range(len(x)):
                dy, dx = rng.integers(-shift, shift + 1, size=2)
                out[i] = _shift(x[i], int(dy), int(dx))
        else:
            out = (x + rng.normal(0.0, 1.0, size=x.shape) * noise * scale).astype(x.dtype)
        copies.append(out)
        labels.append(y)
    return np.concatenate(copies), np.concatenate(labels)


def _shift(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(img)
    h, w = img.shape[-2:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = img[..., ys, xs]
    return out


@dataclass
class Mixed:
    x: np.ndarray
    soft: np.ndarray  # (N, classes) label distribution
    weight_on_failure: np.ndarray  # λ_f per sample
    same_class: np.ndarray  # partner drawn from the failure's class


def guided_mix(fx: np.ndarray, fy: np.ndarray, tx: np.ndarray, ty: np.ndarray, n: int, num_classes: int,
               alpha: float, same_class_prob: float, rng: np.random.Generator) -> Mixed:
    """`n` mixed samples, each a failure-pool sample mixed with a training partner."""
    if len(fy) == 0:
        raise ValueError("guided mix needs at least one failure sample")
    f_idx = rng.integers(0, len(fy), size=n)
    by_class = {c: np.flatnonzero(ty == c) for c in np.unique(ty)}
    same = rng.random(n) < same_class_prob
    t_idx = np.empty(n, dtype=np.int64)
    for k in range(n):
        pool = by_class.get(int(fy[f_idx[k]]))
        if same[k] and pool is not None and len(pool):
            t_idx[k] = pool[rng.integers(0, len(pool))]
        else:
            same[k] = False
            t_idx[k] = rng.integers(0, len(ty))
    lam = rng.beta(alpha, alpha, size=n)
    lam = np.maximum(lam, 1.0 - lam).astype(np.float32)
    shape = (n,) + (1,) * (fx.ndim - 1)
    x = lam.reshape(shape) * fx[f_idx] + (1.0 - lam.reshape(shape)) * tx[t_idx]
    soft = np.zeros((n, num_classes), dtype=np.float32)
    soft[np.arange(n), fy[f_idx]] += lam
    soft[np.arange(n), ty[t_idx]] += 1.0 - lam
    return Mixed(x.astype(np.float32), soft, lam, same)


def soft_cross_entropy(out: torch.Tensor, soft: torch.Tensor, probabilities: bool) -> torch.Tensor:
    logp = torch.log(out.clamp_min(1e-7)) if probabilities else F.log_softmax(out, dim=-1)
    return -(soft * logp).sum(dim=1).mean()


def retrain(model: nn.Module, x: np.ndarray, soft: np.ndarray, epochs: int, lr: float, batch_size: int,
            probabilities: bool, rng: np.random.Generator, evaluate: Callable[[nn.Module], float],
            progress: Callable[[int, float, float], None] = lambda e, acc, best: None,
            should_stop: Callable[[], bool] = lambda: False, patience: int | None = None) -> tuple[float, float, int]:
    """Fine-tunes on (x, soft labels), keeping the epoch with the best `evaluate` score (the
    model is left holding it). Returns (score before, best score, best epoch; 0 = none
    improved)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    best = before = evaluate(model)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    best_epoch, stale = 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch_size):
            if should_stop():
                break
            idx = order[i : i + batch_size]
            optimiser.zero_grad()
            loss = soft_cross_entropy(model(torch.from_numpy(x[idx])), torch.from_numpy(soft[idx]), probabilities)
            loss.backward()
            optimiser.step()
        score = evaluate(model)
        if score > best:
            best, best_epoch, stale = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        progress(epoch, score, best)
        if should_stop() or (patience is not None and stale >= patience):
            break
    model.load_state_dict(best_state)
    model.eval()
    return before, best, best_epoch
