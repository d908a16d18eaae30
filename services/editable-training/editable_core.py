"""Editable Training's core (Sinitsin, Plokhotnyuk, Pyrkin, Popov, Babenko, "Editable Neural
Networks", ICLR 2020), written on torch.func.functional_call so that any nn.Module (the
onnx2torch conversion of a faulty ONNX model included) can be edited out of place.

- The *editor* (the paper's gradient-descent editor): starting from θ, take gradient steps
  θ ← θ − α ∇ l_e(θ) on the edit loss until the edit holds (l_e = 0: the desired class wins)
  or `max_steps` steps have been taken.
- The edit loss l_e is the paper's for classification: max over other classes of
  log p(y' | x) − log p(y_ref | x), clipped at 0 (the official code's contrastive
  cross-entropy with margin 0), which is 0 exactly when y_ref is the argmax.
- *Editable training* minimises L_base(θ) + c_edit · L_edit + c_loc · L_loc, where the
  edited parameters θ̂ = Edit_k(θ) are computed in the graph (k steps, second-order
  gradients, as in MAML), L_edit = l_e(θ̂) on a sampled edit (x, random label) and L_loc is
  the cross-entropy between the unedited and the edited model's predictions on the training
  batch (the KL divergence up to a constant), keeping edits local.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]


def log_probs(out: torch.Tensor, probabilities: bool) -> torch.Tensor:
    """Log-probabilities from logits, or from a graph that already ends in softmax."""
    return torch.log(out.clamp_min(1e-7)) if probabilities else F.log_softmax(out, dim=-1)


def edit_loss(logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """max_{y' ≠ y} log p(y') − log p(y), clipped at 0 and averaged: 0 iff every target wins."""
    one_hot = F.one_hot(target, num_classes=logp.shape[-1]).bool()
    logp_target = logp[one_hot]
    logp_others = logp.masked_fill(one_hot, float("-inf")).max(dim=-1).values
    return F.relu(logp_others - logp_target).mean()


def parameters_of(model: nn.Module) -> Params:
    return {name: p for name, p in model.named_parameters()}


@dataclass
class EditResult:
    params: Params
    success: bool
    steps: int
    loss: float


def edit(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, lr: float, max_steps: int,
         probabilities: bool, create_graph: bool = False, editable: Sequence[str] | None = None) -> EditResult:
    """The gradient-descent editor. With create_graph the steps stay in the autograd graph
    (editable training differentiates through them); without it they are plain updates.
    `editable` names the parameters the editor may change (default: all)."""
    names = list(params) if editable is None else list(editable)
    current = dict(params)
    for step in range(max_steps + 1):
        loss = edit_loss(log_probs(functional_call(model, current, (x,)), probabilities), y)
        if loss.item() <= 0.0:
            return EditResult(current, True, step, 0.0)
        if step == max_steps:
            break
        grads = torch.autograd.grad(loss, [current[n] for n in names], create_graph=create_graph, allow_unused=True)
        updated = dict(current)
        for n, g in zip(names, grads, strict=True):
            if g is not None:
                updated[n] = current[n] - lr * g
                if not create_graph:
                    updated[n] = updated[n].detach().requires_grad_(True)
        current = updated
    return EditResult(current, False, max_steps, float(loss.item()))


@dataclass
class MetaSettings:
    steps: int
    batch_size: int
    lr: float
    editor_lr: float
    edit_steps: int
    c_edit: float
    c_loc: float
    edits_per_step: int


def meta_train(model: nn.Module, x: np.ndarray, y: np.ndarray, num_classes: int, s: MetaSettings,
               probabilities: bool, rng: np.random.Generator, base_loss: Callable,
               progress: Callable[[int, dict], None] = lambda step, m: None,
               should_stop: Callable[[], bool] = lambda: False) -> dict[str, float]:
    """Editable training (the paper's Algorithm 1) for `s.steps` mini-batches, in place.
    Edits are training inputs paired with a random *other* label, as in the paper (the model
    learns to be editable in general, not to fix particular inputs)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=s.lr)
    last: dict[str, float] = {}
    for step in range(1, s.steps + 1):
        if should_stop():
            break
        idx = rng.choice(len(y), size=min(s.batch_size, len(y)), replace=False)
        xb, yb = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
        e_idx = rng.choice(len(y), size=s.edits_per_step, replace=False)
        xe = torch.from_numpy(x[e_idx])
        ye = torch.from_numpy((y[e_idx] + rng.integers(1, num_classes, size=s.edits_per_step)) % num_classes)
        optimiser.zero_grad()
        # Dropout / batch-norm in eval mode for the editor, as the official trainer does, so
        # that the edited and unedited predictions differ by the edit only.
        model.train()
        out = model(xb)
        main = base_loss(out, yb)
        model.eval()
        params = parameters_of(model)
        edit_total = torch.zeros(())
        loc_total = torch.zeros(())
        successes = 0
        for j in range(s.edits_per_step):
            result = edit(model, params, xe[j : j + 1], ye[j : j + 1], s.editor_lr, s.edit_steps, probabilities,
                          create_graph=True)
            successes += result.success
            edited_logp = log_probs(functional_call(model, result.params, (xb,)), probabilities)
            edit_total = edit_total + edit_loss(log_probs(functional_call(model, result.params, (xe[j : j + 1],)),
                                                          probabilities), ye[j : j + 1])
            reference = log_probs(out, probabilities).detach().exp()
            loc_total = loc_total - (reference * edited_logp).sum(dim=1).mean()
        loss = main + s.c_edit * edit_total / s.edits_per_step + s.c_loc * loc_total / s.edits_per_step
        loss.backward()
        optimiser.step()
        last = {"main_loss": float(main.item()), "edit_loss": float(edit_total.item() / s.edits_per_step),
                "locality_loss": float(loc_total.item() / s.edits_per_step),
                "edit_success": successes / s.edits_per_step}
        progress(step, last)
    model.eval()
    return last


def apply_edits(model: nn.Module, x: np.ndarray, y: np.ndarray, lr: float, max_steps: int, probabilities: bool,
                progress: Callable[[int, int, EditResult], None] = lambda i, n, r: None,
                should_stop: Callable[[], bool] = lambda: False) -> tuple[list[EditResult], int]:
    """Edits the model in place, one failing input after the other (each edit starts from the
    previous edit's parameters, so that one model carries all fixes). Returns the per-edit
    results and how many edits were attempted before a stop."""
    params = {n: p.detach().clone().requires_grad_(True) for n, p in parameters_of(model).items()}
    results = []
    model.eval()
    for i in range(len(y)):
        if should_stop():
            break
        r = edit(model, params, torch.from_numpy(x[i : i + 1]), torch.from_numpy(y[i : i + 1]), lr, max_steps,
                 probabilities)
        params = {n: t.detach().requires_grad_(True) for n, t in r.params.items()}
        results.append(r)
        progress(i, len(y), r)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(params[n])
    return results, len(results)
