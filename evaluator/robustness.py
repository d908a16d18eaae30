"""White-box robustness: PGD L∞ and FGSM on a torch re-import of the ONNX model, and the
attack success rate (ASR) over samples every compared model classifies correctly.

Written here rather than taken from torchattacks / foolbox, both of which pull torchvision.
The PGD follows foolbox's LinfPGD (the study's tool): 40 steps, step size
rel_stepsize · ε with rel_stepsize = 0.01 / 0.3 (foolbox's default), a uniform random
start in the ε-ball, projection onto the ball and clipping to the input bounds after each
step, and the final iterate as the adversarial input (no early stop, no best-of). Madry et
al.'s 2.5 · ε / steps step size is available as `abs_stepsize`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from evaluator.scoring import LOGITS, PROBABILITIES
from fixbench.analysis.errors import (
    EmptyInputError,
    InvalidSettingError,
    LengthMismatchError,
    check_same_length,
)

# ε per dataset from the study protocol (You et al.); stand-ins use their real counterpart's.
DATASET_EPSILON: dict[str, float] = {
    "mnist": 0.15,
    "utkface": 0.07,
    "cifar10": 0.031,
    "cifar10s": 0.035,
    "imagenet": 0.007,
}
FOOLBOX_REL_STEPSIZE = 0.01 / 0.3
DEFAULT_STEPS = 40
# Words that mark a procedural stand-in of a real dataset in a registry name.
_STANDIN_WORDS = (
    "standin",
    "synthetic",
    "procedural",
    "like",
    "fake",
    "mini",
    "tiny",
    "small",
)


def _registered_spec(dataset: str):
    from fixbench.data.errors import UnknownDatasetError
    from fixbench.data.registry import get_dataset

    try:
        return get_dataset(dataset)
    except UnknownDatasetError:
        return None


def default_bounds(dataset: str) -> tuple[float, float] | None:
    """The valid input range the attack clips to: the registered dataset's `input_range`,
    else [0, 1] (every image subject of the study is scaled to [0, 1])."""
    spec = _registered_spec(dataset) if dataset else None
    if spec is not None:
        return None if spec.input_range is None else (float(spec.input_range[0]), float(spec.input_range[1]))
    return (0.0, 1.0)


def default_epsilon(dataset: str) -> float:
    """The protocol's ε for a dataset: the registered dataset's `pgd_epsilon` when the
    registry knows the name, else the protocol table by name (case, '-', '_' and stand-in
    markers such as "-standin" are ignored: "CIFAR-10S-standin" → 0.035). A dataset without
    one raises InvalidSettingError asking for an explicit ε rather than guessing one."""
    spec = _registered_spec(dataset) if dataset else None
    if spec is not None:
        if spec.pgd_epsilon is None:
            raise InvalidSettingError(
                f"dataset {dataset!r} declares no PGD epsilon; pass settings.robustness.eps explicitly"
            )
        return float(spec.pgd_epsilon)
    key = re.sub(r"[^a-z0-9]", "", dataset.lower())
    for word in _STANDIN_WORDS:
        key = key.replace(word, "")
    if key in DATASET_EPSILON:
        return DATASET_EPSILON[key]
    # "mnist5k", "imagenet1k": the longest known name the key starts with.
    matches = [k for k in DATASET_EPSILON if key.startswith(k)]
    if matches:
        return DATASET_EPSILON[max(matches, key=len)]
    raise InvalidSettingError(
        f"no default PGD epsilon for dataset {dataset!r} (known: {sorted(DATASET_EPSILON)}); "
        "pass settings.robustness.eps explicitly"
    )


def common_correct_indices(y: np.ndarray, predictions: Sequence[np.ndarray], n: int, seed: int) -> np.ndarray:
    """Sorted indices of up to `n` inputs that every model in `predictions` classifies
    correctly, drawn without replacement with `seed`; fewer when fewer qualify. Attacking
    the same inputs for every model makes their ASRs comparable (ΔASR like with like)."""
    y = np.asarray(y)
    if n <= 0:
        raise InvalidSettingError(f"robustness samples must be ≥ 1, got {n}")
    if len(predictions) == 0:
        raise InvalidSettingError("common_correct_indices needs at least one model's predictions")
    correct = np.ones(len(y), dtype=bool)
    for i, p in enumerate(predictions):
        p = np.asarray(p)
        if len(p) != len(y):
            raise LengthMismatchError(f"predictions[{i}] has {len(p)} entries for {len(y)} labels")
        correct &= p == y
    candidates = np.flatnonzero(correct)
    if len(candidates) <= n:
        return candidates
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=n, replace=False))


def attack_loss(outputs, labels, kind: str):
    """Summed loss whose gradient ascent moves inputs away from their label: cross-entropy
    for logits, NLL of log(clamped probabilities) for a softmax output (cross-entropy on
    probabilities would apply a second softmax and flatten the gradient)."""
    import torch
    import torch.nn.functional as F

    if kind == LOGITS:
        return F.cross_entropy(outputs, labels, reduction="sum")
    if kind == PROBABILITIES:
        return F.nll_loss(torch.log(outputs.clamp(min=1e-12)), labels, reduction="sum")
    raise InvalidSettingError(f"output kind must be {LOGITS!r} or {PROBABILITIES!r}, got {kind!r}")


def _check_attack_args(x, y, eps, bounds):
    check_same_length(x=x, y=y)
    if len(x) == 0:
        raise EmptyInputError("no inputs to attack")
    if not (eps >= 0.0 and math.isfinite(eps)):
        raise InvalidSettingError(f"eps must be a finite number ≥ 0, got {eps}")
    if bounds is not None:
        lo, hi = bounds
        if not lo < hi:
            raise InvalidSettingError(f"bounds must be (low, high) with low < high, got {bounds}")


def _forward(module, xb):
    out = module(xb)
    return out[0] if isinstance(out, (tuple, list)) else out


def _input_gradient(module, xb, yb, kind):
    import torch

    xb = xb.detach().requires_grad_(True)
    loss = attack_loss(_forward(module, xb), yb, kind)
    (grad,) = torch.autograd.grad(loss, [xb])
    return grad


def pgd_linf(
    module,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    steps: int = DEFAULT_STEPS,
    rel_stepsize: float = FOOLBOX_REL_STEPSIZE,
    abs_stepsize: float | None = None,
    random_start: bool = True,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    output_kind: str = LOGITS,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
) -> np.ndarray:
    """Untargeted PGD in the L∞ ball of radius `eps` around each input; returns the
    adversarial inputs (float32, same shape as `x`).

    Step size is `abs_stepsize` if given, else rel_stepsize · eps. `bounds` is the valid
    input range (None: no clipping). The random start draws from a torch generator seeded
    with `seed`, so equal arguments give equal results.
    """
    import torch

    _check_attack_args(x, y, eps, bounds)
    if steps < 1:
        raise InvalidSettingError(f"PGD steps must be ≥ 1, got {steps}")
    step = abs_stepsize if abs_stepsize is not None else rel_stepsize * eps
    if not (step >= 0.0 and math.isfinite(step)):
        raise InvalidSettingError(f"PGD step size must be a finite number ≥ 0, got {step}")
    gen = torch.Generator(device=device).manual_seed(int(seed))
    out = np.empty(np.shape(x), dtype=np.float32)
    for i in range(0, len(x), batch_size):
        x0 = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)).to(device)
        yb = torch.from_numpy(np.asarray(y[i : i + batch_size], dtype=np.int64)).to(device)
        xa = x0.clone()
        if random_start and eps > 0:
            noise = torch.rand(x0.shape, generator=gen, device=device, dtype=x0.dtype)
            xa = xa + (noise * 2.0 - 1.0) * eps
            if bounds is not None:
                xa = xa.clamp(bounds[0], bounds[1])
        for _ in range(steps):
            grad = _input_gradient(module, xa, yb, output_kind)
            with torch.no_grad():
                xa = xa + step * grad.sign()
                xa = x0 + (xa - x0).clamp(-eps, eps)
                if bounds is not None:
                    xa = xa.clamp(bounds[0], bounds[1])
        out[i : i + len(x0)] = xa.detach().cpu().numpy()
    return out


def fgsm(
    module,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    output_kind: str = LOGITS,
    batch_size: int = 256,
    device: str = "cpu",
) -> np.ndarray:
    """Fast gradient sign method: one step of size `eps` along the loss gradient's sign."""
    import torch

    _check_attack_args(x, y, eps, bounds)
    out = np.empty(np.shape(x), dtype=np.float32)
    for i in range(0, len(x), batch_size):
        x0 = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)).to(device)
        yb = torch.from_numpy(np.asarray(y[i : i + batch_size], dtype=np.int64)).to(device)
        grad = _input_gradient(module, x0, yb, output_kind)
        with torch.no_grad():
            xa = x0 + eps * grad.sign()
            if bounds is not None:
                xa = xa.clamp(bounds[0], bounds[1])
        out[i : i + len(x0)] = xa.cpu().numpy()
    return out


def attack_success_rate(y: np.ndarray, pred_adversarial: np.ndarray) -> float:
    """ASR (%) = share of the attacked inputs whose prediction is not their true label.
    Callers attack only correctly classified inputs (`common_correct_indices`), so this is
    the share of predictions the attack changed away from the truth."""
    y, pred_adversarial = np.asarray(y), np.asarray(pred_adversarial)
    n = check_same_length(y=y, pred_adversarial=pred_adversarial)
    if n == 0:
        raise EmptyInputError("ASR of zero attacked inputs is undefined")
    return float((pred_adversarial != y).mean() * 100.0)
