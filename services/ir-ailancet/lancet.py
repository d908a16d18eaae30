"""AI-Lancet's two steps on a torch module (the faulty ONNX model through onnx2torch):

1. locate the error-inducing neurons (EINs): for every misclassified repair input, each hidden
   neuron's contribution to the error is its activation times the gradient of the error margin
   (wrong-class score − true-class score) with respect to it, summed over a channel's spatial
   positions; averaged over the failing inputs, the neurons that push hardest towards the
   errors are the EINs (top `neurons_per_layer` of every hidden Conv / dense layer);
2. neuron fine-tuning: train only the EINs' incoming weights and biases (every other
   gradient is masked to zero) on the repair inputs mixed with training inputs, keeping the
   epoch with the best validation accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Neuron:
    layer: str  # the torch module's name (the ONNX node name, as onnx2torch keeps it)
    index: int  # output channel / unit
    score: float  # mean contribution to the error margin, normalised by the layer's largest


def hidden_layers(module, example: np.ndarray, num_classes: int) -> list[str]:
    """Conv and dense modules in execution order, without the output layer (its units are the
    classes themselves, not hidden neurons)."""
    import torch

    order: list[str] = []
    handles = [m.register_forward_hook(lambda mod, i, o, name=name: order.append(name))
               for name, m in module.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            module(torch.from_numpy(np.ascontiguousarray(example[:1], dtype=np.float32)))
    finally:
        for h in handles:
            h.remove()
    seen: list[str] = []
    for name in order:
        if name not in seen:
            seen.append(name)
    if seen:
        last = module.get_submodule(seen[-1])
        out = last.out_features if isinstance(last, torch.nn.Linear) else last.out_channels
        if out == num_classes:
            seen = seen[:-1]
    return seen


def error_scores(module, layers: list[str], x: np.ndarray, y: np.ndarray, probabilities: bool,
                 batch_size: int = 128) -> dict[str, np.ndarray]:
    """Per layer, each neuron's mean activation × gradient of the error margin over the
    (misclassified) inputs `x`, `y`."""
    import torch

    acts: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(mod, inputs, output):
            output.retain_grad()
            acts[name] = output
        return hook

    handles = [module.get_submodule(n).register_forward_hook(keep(n)) for n in layers]
    totals = {n: None for n in layers}
    module.eval()
    try:
        for i in range(0, len(y), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32))
            yb = torch.from_numpy(np.asarray(y[i:i + batch_size], dtype=np.int64))
            out = module(xb)
            score = torch.log(out.clamp_min(1e-7)) if probabilities else out
            true = score.gather(1, yb.view(-1, 1)).squeeze(1)
            others = score.clone()
            others.scatter_(1, yb.view(-1, 1), float("-inf"))
            margin = others.max(dim=1).values - true  # > 0 on a misclassified input
            module.zero_grad(set_to_none=True)
            margin.sum().backward()
            for n in layers:
                a = acts[n]
                contrib = (a * a.grad).detach()
                contrib = contrib.sum(dim=tuple(range(2, contrib.dim()))) if contrib.dim() > 2 else contrib
                s = contrib.sum(dim=0).numpy()
                totals[n] = s if totals[n] is None else totals[n] + s
    finally:
        for h in handles:
            h.remove()
    return {n: (t / max(len(y), 1)).astype(np.float64) for n, t in totals.items() if t is not None}


def locate(scores: dict[str, np.ndarray], neurons_per_layer: int) -> list[Neuron]:
    """The EINs: the top `neurons_per_layer` neurons with a positive contribution in each layer,
    best first (scores normalised so that each layer's strongest is 1.0)."""
    found: list[Neuron] = []
    for layer, s in scores.items():
        top = float(s.max()) if s.size else 0.0
        if top <= 0:
            continue
        for idx in np.argsort(-s, kind="stable")[:neurons_per_layer]:
            if s[idx] > 0:
                found.append(Neuron(layer, int(idx), float(s[idx] / top)))
    return sorted(found, key=lambda n: (-n.score, n.layer, n.index))


def freeze_all_but(module, neurons: list[Neuron]) -> list:
    """Makes only the EINs' incoming weights and biases trainable: every parameter of the other
    layers is frozen, and in the EINs' layers a gradient mask keeps the other rows fixed.
    Returns the trainable parameters and the hook handles (to remove after training)."""
    import torch

    by_layer: dict[str, list[int]] = {}
    for n in neurons:
        by_layer.setdefault(n.layer, []).append(n.index)
    for p in module.parameters():
        p.requires_grad_(False)
    trainable, handles = [], []
    for layer, idx in by_layer.items():
        mod = module.get_submodule(layer)
        for p in (mod.weight, mod.bias):
            if p is None:
                continue
            mask = torch.zeros_like(p)
            mask[idx] = 1.0
            p.requires_grad_(True)
            handles.append(p.register_hook(lambda g, m=mask: g * m))
            trainable.append(p)
    return trainable, handles


def neuron_finetune(module, neurons: list[Neuron], x: np.ndarray, y: np.ndarray, valid_x: np.ndarray,
                    valid_y: np.ndarray, loss_fn: Callable, epochs: int, learning_rate: float, batch_size: int,
                    patience: int, rng: np.random.Generator, should_stop: Callable[[], bool],
                    report: Callable[[int, float], None]) -> tuple[float, float, int]:
    """Fine-tunes the EINs only; leaves the module at its best-validation epoch. Returns
    (validation accuracy before, best validation accuracy, best epoch; 0 = none improved)."""
    import copy

    import torch

    from fixbench.sdk.torch_helpers import accuracy, minibatches

    trainable, handles = freeze_all_but(module, neurons)
    # Plain SGD with momentum: a masked gradient of zero then moves nothing (Adam's would not
    # either, but SGD keeps the frozen rows exactly equal without relying on that).
    optimiser = torch.optim.SGD(trainable, lr=learning_rate, momentum=0.9)
    before = accuracy(module, valid_x, valid_y)
    best, best_state, best_epoch, stale = before, copy.deepcopy(module.state_dict()), 0, 0
    try:
        for epoch in range(1, epochs + 1):
            # Eval mode while training: only the EINs' weights may change, so BatchNorm
            # statistics and dropout stay as the faulty model has them.
            module.eval()
            for idx in minibatches(len(y), batch_size, rng):
                if should_stop():
                    break
                optimiser.zero_grad()
                loss = loss_fn(module(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
                loss.backward()
                optimiser.step()
            acc = accuracy(module, valid_x, valid_y)
            report(epoch, acc)
            if acc > best:
                best, best_state, best_epoch, stale = acc, copy.deepcopy(module.state_dict()), epoch, 0
            else:
                stale += 1
            if stale >= patience or should_stop():
                break
    finally:
        for h in handles:
            h.remove()
    module.load_state_dict(best_state)
    module.eval()
    return before, best, best_epoch
