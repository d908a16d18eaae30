"""AutoTrainer's two halves on the fixbench zoo, apart from the gRPC service so tests call them
directly: the training monitor (symptom features per epoch and the issue decision, with the
thresholds of the original tool) and the fix chain (per symptom, the solutions tried in order,
each a change of the training recipe).

Written from Zhang et al., "AUTOTRAINER: An Automatic DNN Training Problem Detection and
Repair System" (ICSE 2021) and the behaviour of the authors' tool (github.com/shiningrain/
AUTOTRAINER, utils/monitor.py and utils/repair.py); our own code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The original tool's default thresholds (its `params`): beta_1 / beta_2 bound the gradient
# ratio and first-layer norm of a vanishing gradient, beta_3 the ratio of an exploding one,
# gamma the share of zero gradients of dying ReLUs, zeta / eta the accuracy swing and the
# share of swinging epochs of an oscillating loss, delta the largest per-epoch accuracy gain
# of slow convergence, theta the accuracy a training must reach to count as converged.
PAPER_THRESHOLDS: dict[str, float] = {
    "beta_1": 1e-3,
    "beta_2": 1e-4,
    "beta_3": 70.0,
    "gamma": 0.7,
    "zeta": 0.03,
    "eta": 0.2,
    "delta": 0.01,
    "theta": 0.7,
}
# Loss-based checks start once this share of the planned epochs has run (original: 0.3).
JUDGMENT_POINT = 0.3

SYMPTOMS = ("vanish", "explode", "relu", "unstable", "not_converge")
SYMPTOM_NAMES = {
    "vanish": "vanishing gradient",
    "explode": "exploding gradient",
    "relu": "dying ReLU",
    "unstable": "oscillating loss",
    "not_converge": "slow convergence",
}
# Gradient symptoms outrank loss symptoms when one training shows several (original's
# problem_evaluation).
PRIORITY = {"vanish": 2, "explode": 2, "relu": 2, "not_converge": 1, "unstable": 1}

# The original's default ("balance") repair strategy: per symptom, solution_times, tried in
# this order; "_3" means three variants (j = 0, 1, 2) of that solution.
FIX_CHAINS: dict[str, tuple[str, ...]] = {
    "vanish": ("selu_1", "relu_1", "bn_1"),
    "explode": ("selu_1", "relu_1", "gradient_2", "tanh_1", "bn_1"),
    "relu": ("selu_1", "bn_1", "initial_3", "leaky_3"),
    "unstable": ("adam_1", "lr_3", "ReduceLR_1", "batch_3", "momentum_3", "GN_1"),
    "not_converge": ("optimizer_3", "lr_3"),
}
# Keras's default learning rates, which "the parameter setting is default" means.
KERAS_DEFAULT_LR = {"sgd": 0.01, "adam": 0.001, "nadam": 0.002, "adamax": 0.002, "rmsprop": 0.001}
GOOD_INITIALIZERS = ("he_uniform", "lecun_uniform", "glorot_normal", "glorot_uniform", "he_normal", "lecun_normal")
OPTIMIZER_POOL = ("sgd", "adam", "nadam", "adamax", "rmsprop")


class NotExpressible(Exception):
    """A solution the fixbench training recipe cannot express (no field for it), or one that
    would leave the recipe unchanged; the chain records it and moves on."""


# ---- the monitor -------------------------------------------------------------------------
def _finite(values: Sequence[float]) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _max_rise(values: Sequence[float]) -> float:
    """Largest increase between consecutive epochs (0 for fewer than two)."""
    return max([b - a for a, b in zip(values, values[1:], strict=False)] + [0.0])


def oscillates(acc: Sequence[float], zeta: float, eta: float) -> bool:
    """The original's oscillation test: pair the local maxima and minima of the accuracy
    curve in order; oscillating when at least eta × epochs pairs differ by ≥ zeta."""
    maxima, minima = [], []
    for i in range(1, len(acc) - 1):
        if acc[i] >= acc[i - 1] and acc[i] >= acc[i + 1]:
            maxima.append(acc[i])
        if acc[i] <= acc[i - 1] and acc[i] <= acc[i + 1]:
            minima.append(acc[i])
    swings = sum(1 for hi, lo in zip(maxima, minima, strict=False) if hi - lo >= zeta)
    return swings >= eta * len(acc)


@dataclass
class GradientSummary:
    """Per check: the kernel gradients' norms, the first/last norm ratio and the share of
    zero gradient entries (all parameters), as the original summarises them."""

    kernel_norms: list[float]
    ratio: float
    zero_share: float
    finite: bool

    @classmethod
    def of(cls, gradients: Sequence[tuple[str, np.ndarray]]) -> GradientSummary | None:
        if not gradients:
            return None
        arrays = [np.asarray(g, dtype=np.float64) for _, g in gradients]
        finite = all(np.isfinite(a).all() for a in arrays)
        kernels = [a for a in arrays if a.ndim >= 2] or arrays
        norms = [float(np.linalg.norm(a)) for a in kernels]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = norms[0] / norms[-1] if norms[-1] > 0 else (math.inf if norms[0] > 0 else 0.0)
        total = sum(a.size for a in arrays)
        zeros = sum(int((a == 0).sum()) for a in arrays)
        return cls(norms, float(ratio), zeros / total if total else 0.0, finite)


@dataclass
class Monitor:
    """Watches one training through the trainer's `on_epoch` hook and decides its issue.

    Features accumulate over the checks as in the original: gradient symptoms are counted,
    NaN/large losses and the loss-curve verdicts are flags. Once an issue is decided the
    monitor asks the trainer to stop (AutoTrainer interrupts training to repair it)."""

    total_epochs: int
    thresholds: dict[str, float] = field(default_factory=lambda: dict(PAPER_THRESHOLDS))
    determine_threshold: int = 1
    check_every: int = 1
    stop_on_issue: bool = True
    history: dict[str, list[float]] = field(default_factory=lambda: {"loss": [], "acc": [], "val_loss": [], "val_acc": []})
    counts: dict[str, int] = field(default_factory=lambda: {"vanish_gradient": 0, "explode_gradient": 0, "died_relu": 0})
    flags: dict[str, bool] = field(default_factory=dict)
    issues: list[str] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, state) -> bool:
        record = state.record
        self.history["loss"].append(float(record.get("loss", math.nan)))
        self.history["acc"].append(float(record.get("accuracy", math.nan)))
        self.history["val_loss"].append(float(record.get("valid_loss", math.nan)))
        self.history["val_acc"].append(float(record.get("valid_accuracy", math.nan)))
        last = state.epoch >= state.total_epochs or "stopped" in record
        if state.epoch % self.check_every and not last:
            return False
        self._check(GradientSummary.of(state.gradients), state.epoch)
        return bool(self.issues) and self.stop_on_issue

    def _check(self, grads: GradientSummary | None, epoch: int) -> None:
        t = self.thresholds
        nan_gradient = grads is not None and not grads.finite
        if grads is not None and grads.finite:
            if grads.ratio < t["beta_1"] and grads.kernel_norms[0] < t["beta_2"]:
                self.counts["vanish_gradient"] += 1
            if grads.ratio > t["beta_3"]:
                self.counts["explode_gradient"] += 1
            if grads.zero_share >= t["gamma"]:
                self.counts["died_relu"] += 1
        h = self.history
        nan_loss = not _finite(h["loss"]) or not _finite(h["val_loss"]) or h["val_loss"][-1] >= 1e5
        if not nan_loss and len(h["loss"]) >= JUDGMENT_POINT * self.total_epochs:
            if oscillates(h["acc"], t["zeta"], t["eta"]):
                self.flags["unstable_loss"] = True
            if max(h["val_acc"]) < t["theta"] or max(h["acc"]) < t["theta"]:
                self.flags["not_converge"] = True
            if _max_rise(h["val_acc"]) < t["delta"] and _max_rise(h["acc"]) < t["delta"]:
                self.flags["sc_accuracy"] = True
        if nan_loss:
            self.flags["nan_loss"] = True
        if nan_gradient:
            self.flags["nan_gradient"] = True
        self.seen.append({"epoch": epoch, **self.counts, **self.flags,
                          **({"gradient_ratio": grads.ratio, "zero_share": grads.zero_share} if grads else {})})
        if not self.issues:
            self.issues = self._decide()

    def _decide(self) -> list[str]:
        """The original's decision: NaN anywhere is an exploding gradient; a training that has
        not converged (or gains too slowly) names the first gradient symptom seen often enough,
        else slow convergence; a converged one with a swinging accuracy oscillates."""
        f, c, k = self.flags, self.counts, self.determine_threshold
        issues = []
        if f.get("nan_loss") or f.get("nan_gradient"):
            issues.append("explode")
        if f.get("not_converge") or f.get("sc_accuracy"):
            if c["died_relu"] >= k:
                issues.append("relu")
            elif c["explode_gradient"] >= k:
                issues.append("explode")
            elif c["vanish_gradient"] >= k:
                issues.append("vanish")
            elif f.get("sc_accuracy"):
                issues.append("not_converge")
        elif f.get("unstable_loss"):
            issues.append("unstable")
        issues = sorted(set(issues), key=SYMPTOMS.index)
        if len(issues) > 1:  # the highest-priority one is repaired first
            issues = [max(issues, key=lambda s: PRIORITY[s])]
        return issues


# ---- the fix chain -----------------------------------------------------------------------
@dataclass(frozen=True)
class Solution:
    """One step of a chain: the original's solution name, its variant j, what it means."""

    name: str
    variant: int
    description: str


def chain_steps(symptom: str) -> list[tuple[str, int]]:
    """(solution, variant) in the order the original tries them for `symptom`."""
    if symptom not in FIX_CHAINS:
        raise ValueError(f"unknown AutoTrainer symptom {symptom!r}; known: {list(FIX_CHAINS)}")
    steps = []
    for entry in FIX_CHAINS[symptom]:
        name, times = entry.rsplit("_", 1)
        steps += [(name, j) for j in range(int(times))]
    return steps


def apply_solution(recipe, name: str, variant: int, symptom: str, rng: np.random.Generator,
                   batch_cap: int | None = None):
    """(new recipe, description) for solution `name` (variant `variant`) on `recipe`, or
    raises NotExpressible. Randomised solutions (initialiser, optimiser) draw from `rng`."""

    def changed(new, text):
        if not recipe.diff(new):
            raise NotExpressible(f"{name}: the recipe already has it ({text})")
        return new, text

    if name == "selu":
        return changed(recipe.replace(activation="selu", initializer="lecun_uniform"),
                       "SELU activations with lecun_uniform initialisation")
    if name == "relu":
        return changed(recipe.replace(activation="relu", initializer="he_uniform"),
                       "ReLU activations with he_uniform initialisation")
    if name == "tanh":
        return changed(recipe.replace(activation="tanh", initializer="he_uniform"),
                       "tanh activations with he_uniform initialisation")
    if name == "bn":
        # Only architectures with a batch_norm option can gain BatchNorm through the recipe.
        try:
            recipe.option("batch_norm")
        except ValueError:  # RecipeError: the architecture declares no such option
            raise NotExpressible(f"bn: the {recipe.architecture} recipe has no BatchNorm option") from None
        return changed(recipe.replace(options={**dict(recipe.options), "batch_norm": "true"}),
                       "BatchNorm after the layers")
    if name == "initial":
        init = str(rng.choice(GOOD_INITIALIZERS))
        return changed(recipe.replace(initializer=init), f"{init} initialisation")
    if name == "leaky":
        # LeakyReLU, ELU, ThresholdedReLU in the original; the recipe's activations have ELU only.
        advanced = ("LeakyReLU", "elu", "ThresholdedReLU")[variant]
        if advanced != "elu":
            raise NotExpressible(f"leaky: the recipe has no {advanced} activation")
        return changed(recipe.replace(activation="elu"), "ELU activations")
    if name == "adam":
        if recipe.optimizer == "adam":
            raise NotExpressible("adam: the optimiser is Adam already")
        return changed(recipe.replace(optimizer="adam", learning_rate=KERAS_DEFAULT_LR["adam"]),
                       "Adam with its default learning rate 0.001")
    if name == "lr":
        # Oscillation: ÷10, ÷100, ÷1000; slow convergence: ×10, ×100, ×1000.
        factor = 10.0 ** (-(variant + 1) if symptom == "unstable" else variant + 1)
        lr = recipe.learning_rate * factor
        if not 0 < lr <= 100:
            raise NotExpressible(f"lr: {lr:g} is outside the recipe's learning-rate range")
        return changed(recipe.replace(learning_rate=lr), f"learning rate x{factor:g} -> {lr:g}")
    if name == "batch":
        size = recipe.batch_size * 2 ** (variant + 1)
        if batch_cap is not None and recipe.batch_size >= batch_cap:
            raise NotExpressible(f"batch: the batch already holds the whole training set ({batch_cap})")
        size = min(size, batch_cap) if batch_cap else size
        return changed(recipe.replace(batch_size=int(size)), f"batch size {size}")
    if name == "optimizer":
        pool = [o for o in OPTIMIZER_POOL if o != recipe.optimizer]
        opt = str(rng.choice(pool))
        return changed(recipe.replace(optimizer=opt, learning_rate=KERAS_DEFAULT_LR[opt]),
                       f"{opt} with its default learning rate {KERAS_DEFAULT_LR[opt]:g}")
    if name == "gradient":
        raise NotExpressible("gradient: the recipe has no gradient clipping")
    if name == "ReduceLR":
        raise NotExpressible("ReduceLR: the recipe has no learning-rate schedule")
    if name == "momentum":
        raise NotExpressible("momentum: the recipe has no SGD momentum field")
    if name == "GN":
        raise NotExpressible("GN: the recipe has no Gaussian-noise layer")
    raise ValueError(f"unknown AutoTrainer solution {name!r}")


# ---- the repair loop ---------------------------------------------------------------------
@dataclass
class Attempt:
    """One retraining the chain ran (or skipped)."""

    round: int
    symptom: str
    solution: str
    variant: int
    description: str
    recipe: Any = None
    issues: list[str] = field(default_factory=list)
    valid_accuracy: float | None = None
    outcome: str = ""  # solved | new issue | same issue | failed | not expressible
    result: Any = None

    def record(self) -> dict[str, Any]:
        return {"round": self.round, "symptom": self.symptom, "solution": f"{self.solution}_{self.variant}",
                "description": self.description, "issues": list(self.issues),
                "valid_acc": self.valid_accuracy, "outcome": self.outcome}


@dataclass
class RepairRun:
    """What `autotrain` did: the faulty run's issues, every attempt, and the chosen one."""

    initial_issues: list[str]
    symptoms_seen: list[str]
    attempts: list[Attempt]
    chosen: Attempt | None
    solved: bool
    stopped_early: bool = False


TrainFn = Callable[[Any, Monitor], tuple[Any, float | None]]


def autotrain(base, make_monitor: Callable[[Any], Monitor], train_fn: TrainFn, rng: np.random.Generator,
              max_rounds: int = 10, should_stop: Callable[[], bool] = lambda: False,
              on_attempt: Callable[[Attempt], None] = lambda a: None, batch_cap: int | None = None,
              initial_issues: list[str] | None = None, admit: Callable[[Any], bool] = lambda r: True) -> RepairRun:
    """AutoTrainer's loop on a recipe. `train_fn(recipe, monitor)` trains with the monitor
    attached and returns (result or None when it diverged to non-finite weights, valid acc).

    Round r repairs the current symptom: its chain's solutions are applied in order to the
    round's recipe and retrained. A retraining with no issue solves it (stop). One with a
    different issue is an improvement ("potential"); when the chain ends unsolved the best
    potential (by validation accuracy) becomes the next round's recipe and its issue the next
    symptom, unless that symptom was repaired before (the original stops there too).
    `admit(recipe)` is asked before each retraining (e.g. a budget in training samples); when
    it refuses, the loop stops with what it has."""
    if initial_issues is None:
        monitor = make_monitor(base)
        train_fn(base, monitor)
        initial_issues = list(monitor.issues)
    seen = list(initial_issues)
    attempts: list[Attempt] = []
    if not initial_issues:
        return RepairRun([], [], [], None, solved=False)
    symptom, recipe, repaired = initial_issues[0], base, []
    best_potential: Attempt | None = None
    for rnd in range(max_rounds):
        repaired.append(symptom)
        potentials: list[Attempt] = []
        for name, j in chain_steps(symptom):
            if should_stop():
                return RepairRun(initial_issues, seen, attempts, best_potential, False, stopped_early=True)
            try:
                new, text = apply_solution(recipe, name, j, symptom, rng, batch_cap)
            except NotExpressible as exc:
                attempt = Attempt(rnd, symptom, name, j, str(exc), outcome="not expressible")
                attempts.append(attempt)
                on_attempt(attempt)
                continue
            if not admit(new):  # the budget cannot pay for this retraining
                return RepairRun(initial_issues, seen, attempts, best_potential, False, stopped_early=True)
            monitor = make_monitor(new)
            result, acc = train_fn(new, monitor)
            attempt = Attempt(rnd, symptom, name, j, text, new, list(monitor.issues), acc, result=result)
            for issue in monitor.issues:
                if issue not in seen:
                    seen.append(issue)
            if result is None:
                attempt.outcome = "failed"
            elif not monitor.issues:
                attempt.outcome = "solved"
            elif monitor.issues[0] != symptom:
                attempt.outcome = "new issue"
                potentials.append(attempt)
            else:
                attempt.outcome = "same issue"
            attempts.append(attempt)
            on_attempt(attempt)
            if attempt.outcome == "solved":
                return RepairRun(initial_issues, seen, attempts, attempt, True)
        if not potentials:
            return RepairRun(initial_issues, seen, attempts, best_potential, False)
        best = max(potentials, key=lambda a: a.valid_accuracy if a.valid_accuracy is not None else -1.0)
        if best_potential is None or (best.valid_accuracy or 0) > (best_potential.valid_accuracy or 0):
            best_potential = best
        if best.issues[0] in repaired:
            return RepairRun(initial_issues, seen, attempts, best_potential, False)
        symptom, recipe = best.issues[0], best.recipe
    return RepairRun(initial_issues, seen, attempts, best_potential, False)
