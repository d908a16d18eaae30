"""The 13 Keras losses, computed on the model's output whatever its last activation is.

The model output is what the exported graph returns (after the last activation). Two cases:
- last activation "linear": the output is logits. The distribution losses (cross-entropies,
  KL divergence, Poisson) then work on the logits in the numerically stable form (log-softmax,
  BCE-with-logits, log-rate), i.e. what Keras does with `from_logits=True`.
- anything else: the output is taken as it is, as Keras does: cross-entropy normalises it to
  sum 1 and takes the log of probabilities clamped to [1e-7, 1 − 1e-7]; the other losses
  compare it with one-hot targets. A bad pairing (e.g. hinge on softmax) stays a bad pairing:
  that is the fault being modelled, not something to repair silently.
All losses return the batch mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

EPSILON = 1e-7  # Keras's backend epsilon

LossFn = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]


def _one_hot(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.one_hot(y, like.shape[1]).to(like.dtype)


def _clamped_probs(out: torch.Tensor) -> torch.Tensor:
    total = out.sum(dim=1, keepdim=True).clamp(min=EPSILON)
    return (out / total).clamp(EPSILON, 1.0 - EPSILON)


def categorical_crossentropy(out: torch.Tensor, y: torch.Tensor, logits: bool) -> torch.Tensor:
    """−log p(true class)."""
    if logits:
        return F.cross_entropy(out, y)
    return -torch.log(_clamped_probs(out)).gather(1, y.unsqueeze(1)).mean()


def binary_crossentropy(out: torch.Tensor, y: torch.Tensor, logits: bool) -> torch.Tensor:
    """Per-class binary cross-entropy against one-hot targets, averaged over classes."""
    t = _one_hot(y, out)
    if logits:
        return F.binary_cross_entropy_with_logits(out, t)
    p = out.clamp(EPSILON, 1.0 - EPSILON)
    return -(t * torch.log(p) + (1.0 - t) * torch.log(1.0 - p)).mean()


def kullback_leibler_divergence(out: torch.Tensor, y: torch.Tensor, logits: bool) -> torch.Tensor:
    """Σ t·log(t / p) with Keras's clamping of both sides."""
    t = _one_hot(y, out).clamp(EPSILON, 1.0)
    log_p = F.log_softmax(out, dim=1) if logits else torch.log(out.clamp(EPSILON, 1.0))
    return (t * (torch.log(t) - log_p)).sum(dim=1).mean()


def poisson(out: torch.Tensor, y: torch.Tensor, logits: bool) -> torch.Tensor:
    """rate − t·log(rate); logits are read as log-rates."""
    t = _one_hot(y, out)
    if logits:
        return (torch.exp(out) - t * out).mean()
    return (out - t * torch.log(out.clamp(min=0.0) + EPSILON)).mean()


def categorical_hinge(out: torch.Tensor, y: torch.Tensor, logits: bool) -> torch.Tensor:
    """max(0, max_wrong − true + 1)."""
    t = _one_hot(y, out)
    pos = (t * out).sum(dim=1)
    neg = ((1.0 - t) * out).max(dim=1).values
    return torch.clamp(neg - pos + 1.0, min=0.0).mean()


def hinge(out: torch.Tensor, y: torch.Tensor, logits: bool) -> torch.Tensor:
    """max(0, 1 − s·out) with targets s in {−1, +1}."""
    s = 2.0 * _one_hot(y, out) - 1.0
    return torch.clamp(1.0 - s * out, min=0.0).mean()


def squared_hinge(out: torch.Tensor, y: torch.Tensor, logits: bool) -> torch.Tensor:
    """max(0, 1 − s·out)²."""
    s = 2.0 * _one_hot(y, out) - 1.0
    return torch.clamp(1.0 - s * out, min=0.0).pow(2).mean()


def mean_squared_error(out: torch.Tensor, y: torch.Tensor, logits: bool) -> torch.Tensor:
    """(out − one_hot)², averaged."""
    return (out - _one_hot(y, out)).pow(2).mean()


def mean_absolute_error(out: torch.Tensor, y: torch.Tensor, logits: bool) -> torch.Tensor:
    """|out − one_hot|, averaged."""
    return (out - _one_hot(y, out)).abs().mean()


def mean_absolute_percentage_error(out: torch.Tensor, y: torch.Tensor, logits: bool) -> torch.Tensor:
    """100·|t − out| / max(|t|, ε): with one-hot targets the zero entries dominate (as in Keras)."""
    t = _one_hot(y, out)
    return 100.0 * ((t - out).abs() / t.abs().clamp(min=EPSILON)).mean()


def mean_squared_logarithmic_error(out: torch.Tensor, y: torch.Tensor, logits: bool) -> torch.Tensor:
    """(log(1 + out) − log(1 + t))² with out clamped at ε."""
    t = _one_hot(y, out)
    return (torch.log1p(out.clamp(min=EPSILON)) - torch.log1p(t.clamp(min=EPSILON))).pow(2).mean()


def logcosh(out: torch.Tensor, y: torch.Tensor, logits: bool) -> torch.Tensor:
    """log(cosh(out − t)), in the overflow-free form x + softplus(−2x) − log 2."""
    x = out - _one_hot(y, out)
    return (x + F.softplus(-2.0 * x) - math.log(2.0)).mean()


LOSS_FUNCTIONS: dict[str, LossFn] = {
    "categorical_crossentropy": categorical_crossentropy,
    # Labels are class indices throughout, so the sparse variant computes the same value.
    "sparse_categorical_crossentropy": categorical_crossentropy,
    "binary_crossentropy": binary_crossentropy,
    "kullback_leibler_divergence": kullback_leibler_divergence,
    "poisson": poisson,
    "categorical_hinge": categorical_hinge,
    "hinge": hinge,
    "squared_hinge": squared_hinge,
    "mean_squared_error": mean_squared_error,
    "mean_absolute_error": mean_absolute_error,
    "mean_absolute_percentage_error": mean_absolute_percentage_error,
    "mean_squared_logarithmic_error": mean_squared_logarithmic_error,
    "logcosh": logcosh,
}


def compute_loss(name: str, out: torch.Tensor, y: torch.Tensor, logits: bool) -> torch.Tensor:
    """The named loss of a batch of outputs (N, classes) against class labels (N,)."""
    try:
        fn = LOSS_FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"loss: unknown loss {name!r}; known: {sorted(LOSS_FUNCTIONS)}") from None
    return fn(out, y, logits)
