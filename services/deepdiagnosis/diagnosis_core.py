"""DeepDiagnosis (Wardat et al., ICSE 2022) on the fixbench zoo trainer: the symptom checks run
after every epoch on the first batch (forward values, weights, gradients, loss, accuracy) and
the decision tree that maps the first symptom to an actionable fix, here a recipe field.

Thresholds follow the authors' callback (github.com/DeepDiagnosis/ICSE2022, callback/
callbacks.py); the code is ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEAD_SHARE = 0.7            # share of non-positive outputs of a ReLU layer: dead nodes
SATURATION_BOUND = 5.0      # |pre-activation| of sigmoid / tanh beyond which it saturates
SATURATED_SHARE = 0.5       # share of saturated units of a layer
VANISHING_GRADIENT = 1e-7   # mean |gradient| of a layer below which it vanishes
WEIGHT_VARIANCE = (1e-5, 10.0)  # weight variance outside this: poor weights (initialisation)
LEARN_RATE = 1e-3           # effective learning rate lr·‖g‖/‖w‖ outside [LEARN_RATE/100, LEARN_RATE·100]
CE_LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy")

SYMPTOMS = {
    "numerical_error": "numerical error (NaN/Inf in forward values, weights or gradients)",
    "invalid_loss": "invalid loss or accuracy (NaN/Inf loss, zero accuracy)",
    "out_of_range": "output out of the labels' range for the loss",
    "dead_node": "dead nodes (ReLU outputs ≤ 0)",
    "saturated_activation": "saturated sigmoid / tanh activations",
    "unchanged_tensor": "unchanged forward tensor",
    "loss_not_decreasing": "loss not decreasing",
    "accuracy_not_increasing": "accuracy not increasing",
    "vanishing_gradient": "vanishing gradient",
}

# The fixes the decision tree names, as (recipe field, what to change).
FIXES = {
    "poor_weight": ("initializer", "he_uniform"),
    "normalize": ("normalize_input", True),
    "learning_rate": ("learning_rate", None),
    "activation": ("activation", "relu"),
    "last_activation": ("last_activation", "softmax"),
    "loss": ("loss", "categorical_crossentropy"),
    "optimizer": ("optimizer", "adam"),
    "dropout_or_activation": ("dropout", 0.2),
    "layers_or_sigmoid": ("hidden_units", None),
}


@dataclass
class Symptom:
    name: str
    epoch: int
    layer: int | None = None
    detail: str = ""


@dataclass
class LayerView:
    """One weighted layer on the probe batch: its pre-activation output, weights, gradient."""

    index: int
    output: np.ndarray
    weight: np.ndarray | None
    grad: np.ndarray | None


def probe_layers(model, probe, gradients) -> list[LayerView]:
    """Forward the probe batch through the live model in eval mode, recording each weighted
    layer's output (Linear / Conv, in module order; the last one is the output layer)."""
    import torch
    from torch import nn

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    outputs: dict[int, np.ndarray] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, i=i: outputs.__setitem__(i, out.detach().numpy().copy()))
             for i, m in enumerate(layers)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(probe)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    grads = dict(gradients)
    names = {id(p): n for n, p in model.named_parameters()}
    views = []
    for i, m in enumerate(layers):
        g = grads.get(names.get(id(m.weight)))
        views.append(LayerView(i, outputs.get(i, np.zeros(0)), m.weight.detach().numpy().copy(), g))
    return views


@dataclass
class Diagnoser:
    """Runs the checks after each epoch (the trainer's on_epoch hook). Unlike the original,
    which stops at the first symptom, it keeps watching (`stop_on_first=False`) so that later
    symptoms can rank further suggestions; the first symptom still decides the top fix."""

    recipe: Any
    inputs_normalised: bool
    window: int = 5
    accuracy_window: int = 20
    stop_on_first: bool = False
    symptoms: list[Symptom] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    forward_means: list[list[float]] = field(default_factory=list)
    effective_lr: list[float] = field(default_factory=list)
    poor_weights: bool = False

    def __call__(self, state) -> bool:
        epoch = state.epoch
        found: list[Symptom] = []
        record = state.record
        loss, acc = float(record.get("loss", math.nan)), float(record.get("accuracy", math.nan))
        if not math.isfinite(loss) or not math.isfinite(acc) or acc == 0:
            found.append(Symptom("invalid_loss", epoch, detail=f"loss {loss}, accuracy {acc}"))
        views = probe_layers(state.model, state.probe, state.gradients) if state.probe is not None else []
        hidden = self.recipe.activation
        self.effective_lr = []
        self.poor_weights = False
        for v in views:
            last = v.index == len(views) - 1
            if v.weight is not None and v.weight.size > 1:
                var = float(np.var(v.weight, ddof=1))
                if not (WEIGHT_VARIANCE[0] <= var <= WEIGHT_VARIANCE[1]) or not np.isfinite(var):
                    self.poor_weights = True
                if v.grad is not None:
                    wn = float(np.linalg.norm(v.weight))
                    self.effective_lr.append(self.recipe.learning_rate * float(np.linalg.norm(v.grad)) / wn if wn > 0 else math.inf)
            out = v.output
            if out.size and not np.isfinite(out).all():
                found.append(Symptom("numerical_error", epoch, v.index, "forward"))
            elif v.weight is not None and not np.isfinite(v.weight).all():
                found.append(Symptom("numerical_error", epoch, v.index, "weights"))
            elif v.grad is not None and not np.isfinite(v.grad).all():
                found.append(Symptom("numerical_error", epoch, v.index, "gradients"))
            if last and out.size and self.recipe.loss in CE_LOSSES and self.recipe.last_activation in ("relu", "linear", "elu", "selu", "exponential", "softplus"):
                found.append(Symptom("out_of_range", epoch, v.index, f"{self.recipe.last_activation} output with {self.recipe.loss}"))
            if not last and out.size and hidden in ("relu", "exponential") and np.mean(out <= 0) >= DEAD_SHARE:
                found.append(Symptom("dead_node", epoch, v.index, f"{np.mean(out <= 0):.2f} of the outputs <= 0"))
            if not last and out.size and hidden in ("sigmoid", "tanh", "hard_sigmoid"):
                share = float(np.mean(np.abs(out) >= SATURATION_BOUND))
                if share > SATURATED_SHARE:
                    found.append(Symptom("saturated_activation", epoch, v.index, f"{share:.2f} saturated"))
            if v.grad is not None and np.isfinite(v.grad).all() and float(np.abs(v.grad).mean()) < VANISHING_GRADIENT:
                found.append(Symptom("vanishing_gradient", epoch, v.index, f"mean |g| {float(np.abs(v.grad).mean()):.2e}"))
        self.forward_means.append([float(np.mean(v.output)) if v.output.size else math.nan for v in views])
        self.losses.append(loss)
        self.accuracies.append(acc)
        # "Unchanged" = the mean of the last N values equals their maximum (the original's test).
        if len(self.forward_means) >= self.window:
            recent = np.array(self.forward_means[-self.window:])
            for layer in range(recent.shape[1] - 1):
                col = recent[:, layer]
                if np.isfinite(col).all() and np.mean(col) == np.max(col):
                    found.append(Symptom("unchanged_tensor", epoch, layer))
                    break
        if len(self.losses) >= self.window and _constant(self.losses[-self.window:]):
            found.append(Symptom("loss_not_decreasing", epoch))
        if len(self.accuracies) >= self.accuracy_window and _constant(self.accuracies[-self.accuracy_window:]):
            found.append(Symptom("accuracy_not_increasing", epoch))
        known = {(s.name, s.layer) for s in self.symptoms}
        self.symptoms += [s for s in found if (s.name, s.layer) not in known]
        return bool(self.symptoms) and self.stop_on_first

    # ---- the decision tree ---------------------------------------------------------------
    def lr_off(self) -> bool:
        return any(not (LEARN_RATE / 100 <= r <= LEARN_RATE * 100) for r in self.effective_lr)

    def fix_path(self, symptom: Symptom) -> list[str]:
        """The decision tree for one symptom: its branches in the original's order, the first
        whose condition holds first, then the remaining branches as lower-ranked alternatives."""
        n_layers = max(len(self.forward_means[-1]) if self.forward_means else 1, 1)
        last_layer = symptom.layer is not None and symptom.layer >= n_layers - 1
        act = "last_activation" if last_layer else "activation"
        trees: dict[str, list[tuple[str, bool]]] = {
            "numerical_error": [("poor_weight", self.poor_weights), ("normalize", not self.inputs_normalised),
                                ("learning_rate", self.lr_off()), (act, True)]
            if symptom.detail != "gradients" else
            ([("loss", True), ("last_activation", True)] if last_layer else [(act, True)]),
            "invalid_loss": [("last_activation", self.recipe.last_activation == "linear"),
                             ("learning_rate", self.lr_off()), ("optimizer", True)],
            "out_of_range": [("last_activation", True)],
            "dead_node": [("normalize", not self.inputs_normalised), ("poor_weight", self.poor_weights),
                          ("learning_rate", self.lr_off()), ("dropout_or_activation", True)],
            "saturated_activation": [("normalize", not self.inputs_normalised), ("poor_weight", self.poor_weights),
                                     ("learning_rate", self.lr_off()), ("dropout_or_activation", True)],
            "unchanged_tensor": [("poor_weight", self.poor_weights), ("learning_rate", self.lr_off()), ("optimizer", True)],
            "loss_not_decreasing": [("poor_weight", self.poor_weights), ("normalize", not self.inputs_normalised),
                                    ("learning_rate", self.lr_off()), ("optimizer", True)],
            "accuracy_not_increasing": [("poor_weight", self.poor_weights), ("normalize", not self.inputs_normalised),
                                        ("learning_rate", self.lr_off()), ("optimizer", True)],
            "vanishing_gradient": [("learning_rate", self.lr_off()), ("layers_or_sigmoid", True)],
        }
        # Normalising inputs the model already normalises changes nothing: not a fix here.
        branches = [b for b in trees[symptom.name] if not (b[0] == "normalize" and self.inputs_normalised)]
        taken = next((name for name, cond in branches if cond), branches[-1][0])
        return [taken] + [name for name, _ in branches if name != taken]

    def ranked_fixes(self) -> list[tuple[str, str, Symptom]]:
        """(fix, recipe field, symptom) ranked: the first symptom's decision path, then the
        next symptoms' paths, each field once."""
        out, fields = [], set()
        for symptom in self.symptoms:
            for fix in self.fix_path(symptom):
                fld = FIXES[fix][0]
                if fld not in fields:
                    fields.add(fld)
                    out.append((fix, fld, symptom))
        return out


def _constant(values) -> bool:
    arr = np.asarray(values, dtype=float)
    return bool(np.isfinite(arr).all() and np.mean(arr) == np.max(arr))


def suggested_value(fix: str, recipe) -> Any:
    """A concrete value for the suggested field (what a user would try first)."""
    fld, value = FIXES[fix]
    if fix == "learning_rate":
        return 1e-3 if recipe.learning_rate > 1e-3 else recipe.learning_rate * 10
    if fix == "layers_or_sigmoid":
        return list(recipe.hidden_units[:-1]) or [128]
    if fix == "activation" and recipe.activation == "relu":
        return "elu"
    return value
