"""Adversarial Neuron Pruning (ANP; Wu & Wang, NeurIPS 2021) on the BatchNorm neurons of a torch
module (the faulty ONNX model through onnx2torch), and the pruning written back into the ONNX.

Every BatchNorm channel c is a neuron with a mask m_c ∈ [0, 1] on its scale. ANP perturbs the
neurons adversarially — scale γ_c (m_c + δ_c), shift β_c (1 + ξ_c), |δ|, |ξ| ≤ ε, δ and ξ
ascending the loss for `anp_steps` signed steps — and descends

    α · L(clean masked model) + (1 − α) · L(perturbed masked model)

in the masks (SGD, momentum 0.9, masks clipped to [0, 1]). Neurons that the loss turns off
under perturbation are the sensitive ones; those whose mask ends below `threshold` are pruned
(their BatchNorm scale set to 0, as ANP's pruning does), at most `max_pruned` of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BNNeuron:
    layer: str  # ONNX BatchNormalization node name
    index: int  # channel
    mask: float  # ANP's final mask value (low = prune)


def bn_modules(module) -> list[tuple[str, object]]:
    """The BatchNorm modules onnx2torch made, in graph order: nn.BatchNorm* where the ONNX
    parameters were plain initialisers, its OnnxBatchNorm where they came through Identity
    nodes (shared initialisers)."""
    import torch
    from onnx2torch.node_converters.batch_norm import OnnxBatchNorm

    kinds = (torch.nn.modules.batchnorm._BatchNorm, OnnxBatchNorm)
    return [(n, m) for n, m in module.named_modules() if isinstance(m, kinds)]


class NeuronPerturbation:
    """Forward hooks that recompute each BatchNorm output with ANP's masks and noise."""

    def __init__(self, module, eps: float):
        import torch

        self.modules = bn_modules(module)
        self.eps = eps
        self.masks, self.noise_w, self.noise_b = [], [], []
        self.perturb = False
        self.handles = []
        for _, mod in self.modules:
            n = _channels(mod)
            self.masks.append(torch.ones(n, requires_grad=True))
            self.noise_w.append(torch.zeros(n, requires_grad=True))
            self.noise_b.append(torch.zeros(n, requires_grad=True))
        for i, (_, mod) in enumerate(self.modules):
            self.handles.append(mod.register_forward_hook(self._hook(i)))

    def _hook(self, i):
        import torch

        def hook(mod, inputs, output):
            x, w, b, mean, var, eps = _parts(mod, inputs)
            coeff_w = self.masks[i] + (self.noise_w[i] if self.perturb else 0.0)
            coeff_b = 1.0 + (self.noise_b[i] if self.perturb else 0.0)
            shape = (1, -1) + (1,) * (x.dim() - 2)
            xhat = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)
            return xhat * (w * coeff_w).view(shape) + (b * coeff_b).view(shape)
        return hook

    def reset_noise(self, rng) -> None:
        import torch

        with torch.no_grad():
            for t in self.noise_w + self.noise_b:
                t.copy_(torch.from_numpy(rng.uniform(-self.eps, self.eps, t.numel()).astype(np.float32)))

    def clip(self) -> None:
        import torch

        with torch.no_grad():
            for m in self.masks:
                m.clamp_(0.0, 1.0)
            for t in self.noise_w + self.noise_b:
                t.clamp_(-self.eps, self.eps)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _channels(mod) -> int:
    if hasattr(mod, "num_features"):
        return int(mod.num_features)
    raise ValueError("an OnnxBatchNorm's channel count is only known from its inputs")


def _parts(mod, inputs):
    if hasattr(mod, "running_mean") and mod.running_mean is not None and len(inputs) == 1:
        return inputs[0], mod.weight, mod.bias, mod.running_mean, mod.running_var, mod.eps
    x, w, b, mean, var = inputs[:5]
    return x, w, b, mean, var, mod.epsilon


def prepare_channels(module, example: np.ndarray) -> None:
    """OnnxBatchNorm modules carry no channel count: one forward pass records it."""
    import torch

    handles = []
    for _, mod in bn_modules(module):
        if not hasattr(mod, "num_features"):
            handles.append(mod.register_forward_hook(
                lambda m, inputs, out: setattr(m, "num_features", int(inputs[1].numel()))))
    try:
        with torch.no_grad():
            module(torch.from_numpy(np.ascontiguousarray(example[:1], dtype=np.float32)))
    finally:
        for h in handles:
            h.remove()


def optimise_masks(module, x: np.ndarray, y: np.ndarray, loss_fn: Callable, iterations: int, batch_size: int,
                   eps: float, steps: int, alpha: float, learning_rate: float, rng: np.random.Generator,
                   should_stop: Callable[[], bool], report: Callable[[int, float], None]) -> list[np.ndarray]:
    """ANP's mask optimisation; returns the final mask of every BatchNorm layer."""
    import torch

    from fixbench.sdk.torch_helpers import minibatches

    module.eval()  # the ONNX BatchNorm holds inference statistics only; weights stay frozen
    for p in module.parameters():
        p.requires_grad_(False)
    pert = NeuronPerturbation(module, eps)
    mask_opt = torch.optim.SGD(pert.masks, lr=learning_rate, momentum=0.9)
    noise_opt = torch.optim.SGD(pert.noise_w + pert.noise_b, lr=eps / max(steps, 1))
    it = 0
    try:
        while it < iterations and not should_stop():
            for idx in minibatches(len(y), batch_size, rng):
                if it >= iterations or should_stop():
                    break
                xb, yb = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
                if eps > 0:
                    # Step 1: the neurons' worst perturbation within ε (ascent on the loss).
                    pert.reset_noise(rng)
                    pert.perturb = True
                    for _ in range(steps):
                        noise_opt.zero_grad()
                        (-loss_fn(module(xb), yb)).backward()
                        for t in pert.noise_w + pert.noise_b:
                            t.grad = t.grad.sign() if t.grad is not None else None  # signed step, as ANP
                        noise_opt.step()
                        pert.clip()
                # Step 2: masks descend the natural and the perturbed loss.
                mask_opt.zero_grad()
                loss_rob = 0.0
                if eps > 0:
                    pert.perturb = True
                    loss_rob = loss_fn(module(xb), yb)
                pert.perturb = False
                loss_nat = loss_fn(module(xb), yb)
                loss = alpha * loss_nat + (1 - alpha) * loss_rob
                loss.backward()
                mask_opt.step()
                pert.clip()
                it += 1
                if it % max(1, iterations // 20) == 0 or it == iterations:
                    report(it, float(loss.detach()))
    finally:
        pert.remove()
    return [m.detach().numpy().copy() for m in pert.masks]


def select_pruned(masks: list[np.ndarray], layer_names: list[str], threshold: float,
                  max_pruned: float) -> list[BNNeuron]:
    """Neurons whose mask ended below `threshold`, lowest first, at most `max_pruned` (a
    fraction of all BatchNorm neurons)."""
    all_neurons = [BNNeuron(layer_names[i], int(c), float(m[c])) for i, m in enumerate(masks) for c in range(len(m))]
    below = sorted((n for n in all_neurons if n.mask < threshold), key=lambda n: (n.mask, n.layer, n.index))
    cap = int(np.floor(max_pruned * len(all_neurons)))
    return below[:cap]


def bn_nodes(model) -> list:
    return [n for n in model.graph.node if n.op_type == "BatchNormalization"]


def write_pruned(model, pruned: list[BNNeuron]):
    """A copy of the ONNX model whose pruned BatchNorm neurons have scale 0. Each touched node
    gets its own new scale initialiser, so an initialiser that the exporter shared between
    nodes (identical values) is not changed for the others."""
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    producers = {o: n for n in out.graph.node for o in n.output}
    by_node: dict[str, list[int]] = {}
    for n in pruned:
        by_node.setdefault(n.layer, []).append(n.index)
    existing = {t.name for t in out.graph.initializer}
    for node in out.graph.node:
        if node.op_type != "BatchNormalization" or node.name not in by_node:
            continue
        scale = _resolve_initializer(node.input[1], inits, producers)
        values = numpy_helper.to_array(scale).copy()
        values[by_node[node.name]] = 0.0
        name = f"{node.name}.anp_scale"
        while name in existing:
            name += "_"
        existing.add(name)
        out.graph.initializer.append(numpy_helper.from_array(values.astype(np.float32), name))
        node.input[1] = name
    onnx.checker.check_model(out)
    return out


def _resolve_initializer(name: str, inits: dict, producers: dict):
    """Follows Identity nodes back to the initialiser a BatchNorm input comes from."""
    seen = set()
    while name not in inits:
        node = producers.get(name)
        if node is None or node.op_type != "Identity" or name in seen:
            raise ValueError(f"BatchNorm scale {name!r} is not a constant initialiser")
        seen.add(name)
        name = node.input[0]
    return inits[name]
