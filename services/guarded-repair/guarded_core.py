"""The core of guarded-repair: the losses that protect what the original model got right, the
localised-layer selection, group-balanced sampling weights, and the gated combination of the
original and the repaired model that is exported as one ONNX graph."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

GATES = ("none", "confidence", "soft")


def log_probs(out: torch.Tensor, probabilities: bool) -> torch.Tensor:
    """Log-probabilities whatever the last layer is (a softmax already, or logits)."""
    return torch.log(out.clamp_min(1e-7)) if probabilities else F.log_softmax(out, dim=1)


def distillation(student_logp: torch.Tensor, teacher_logp: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample KL(teacher || student) at a temperature (Hinton et al.), times T² so the
    gradient scale does not shrink with T. Log-probabilities serve as logits (a constant shift
    per row leaves the softmax unchanged)."""
    t = float(temperature)
    teacher = F.softmax(teacher_logp / t, dim=1)
    student = F.log_softmax(student_logp / t, dim=1)
    return (teacher * (torch.log(teacher.clamp_min(1e-12)) - student)).sum(dim=1) * t * t


def fgsm_neighbours(model, x: torch.Tensor, y: torch.Tensor, epsilon: float, lo: float, hi: float,
                    probabilities: bool) -> torch.Tensor:
    """One FGSM step (Goodfellow et al.) from x: the worst-case L∞ neighbour to first order,
    clipped to the data's range. The model's parameter gradients are left untouched."""
    x_adv = x.detach().clone().requires_grad_(True)
    loss = F.nll_loss(log_probs(model(x_adv), probabilities), y)
    (grad,) = torch.autograd.grad(loss, x_adv)
    return (x_adv + epsilon * grad.sign()).clamp(lo, hi).detach()


def consistency(student_logp_clean: torch.Tensor, student_logp_adv: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p(x) || p(x_adv)) with p(x) held fixed (TRADES-style): the neighbourhood
    must agree with the prediction at the point, rather than the point following its
    neighbours."""
    p = student_logp_clean.detach().exp()
    return (p * (student_logp_clean.detach() - student_logp_adv)).sum(dim=1)


def group_weights(groups: np.ndarray | None, n: int) -> np.ndarray:
    """Sample weights that give every sensitive group the same total weight (mean 1); all
    ones when the dataset declares no sensitive attribute."""
    if groups is None:
        return np.ones(n, dtype=np.float32)
    values, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    w = (len(groups) / (len(values) * counts))[inverse]
    return w.astype(np.float32)


def parametrised_layers(model) -> list[tuple[str, torch.nn.Module]]:
    """Modules that own weights directly, in graph (registration) order."""
    return [(name, m) for name, m in model.named_modules()
            if any(True for _ in m.parameters(recurse=False))]


def freeze_all_but_last(model, k: int) -> list[str]:
    """Leaves only the last `k` parametrised layers trainable (k <= 0: all); returns their names."""
    layers = parametrised_layers(model)
    chosen = layers if k <= 0 else layers[-k:]
    chosen_ids = {id(m) for _, m in chosen}
    for _, m in layers:
        for p in m.parameters(recurse=False):
            p.requires_grad_(id(m) in chosen_ids)
    return [name for name, _ in chosen]


class Gated(torch.nn.Module):
    """Original and repaired model in one graph.

    - "confidence": each input gets the original's output where the original's top
      probability exceeds `threshold`, the repaired model's output elsewhere (the original
      is kept where it is sure, which is where it is mostly right);
    - "soft": soft voting, the weighted mean of the two probability vectors (returned as
      probabilities when the models end in a softmax, as log-probabilities otherwise, so the
      output keeps the meaning of a score whose argmax is the class)."""

    def __init__(self, original, repaired, gate: str, threshold: float, weight: float, probabilities: bool):
        super().__init__()
        if gate not in ("confidence", "soft"):
            raise ValueError(f"gate must be confidence or soft, not {gate!r}")
        self.original, self.repaired = original, repaired
        self.gate, self.threshold, self.weight, self.probabilities = gate, float(threshold), float(weight), probabilities

    def forward(self, x):
        a, b = self.original(x), self.repaired(x)
        pa = a if self.probabilities else torch.softmax(a, dim=1)
        if self.gate == "confidence":
            # A strict `>`: onnx2torch (which the evaluator's attacks go through) converts
            # Greater but not GreaterOrEqual.
            keep = pa.max(dim=1, keepdim=True).values > self.threshold
            return torch.where(keep, a, b)
        pb = b if self.probabilities else torch.softmax(b, dim=1)
        mix = (1.0 - self.weight) * pa + self.weight * pb
        # `+ 1e-12` rather than clamp: onnx2torch cannot convert the Clip that clamp exports.
        return mix if self.probabilities else torch.log(mix + 1e-12)


def gate_numpy(orig_scores: np.ndarray, rep_scores: np.ndarray, gate: str, threshold: float, weight: float,
               probabilities: bool) -> np.ndarray:
    """The Gated module's predictions computed from the two models' scores (used to calibrate
    the threshold on validation without running the combined graph)."""
    def softmax(s):
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    pa = orig_scores if probabilities else softmax(orig_scores)
    pb = rep_scores if probabilities else softmax(rep_scores)
    if gate == "confidence":
        keep = pa.max(axis=1) > threshold
        return np.where(keep, pa.argmax(axis=1), pb.argmax(axis=1))
    return ((1.0 - weight) * pa + weight * pb).argmax(axis=1)


def calibrate_threshold(orig_scores: np.ndarray, rep_scores: np.ndarray, y: np.ndarray, probabilities: bool,
                        candidates: int = 21) -> tuple[float, float]:
    """The confidence threshold with the best validation accuracy among quantiles of the
    original's confidence (the original keeps inputs it is more confident on than the
    threshold); ties go to the lowest threshold (more inputs stay with the
    original, the backward-compatible side). Returns (threshold, accuracy)."""
    pa = orig_scores if probabilities else np.exp(orig_scores - orig_scores.max(axis=1, keepdims=True))
    if not probabilities:
        pa = pa / pa.sum(axis=1, keepdims=True)
    conf = pa.max(axis=1)
    grid = np.unique(np.concatenate([[0.0], np.quantile(conf, np.linspace(0.0, 1.0, candidates)), [1.0]]))
    best_t, best_acc = float(grid[-1]), -1.0
    for t in grid:
        acc = float((gate_numpy(orig_scores, rep_scores, "confidence", float(t), 0.5, probabilities) == y).mean())
        if acc > best_acc + 1e-12:
            best_t, best_acc = float(t), acc
    return best_t, best_acc
