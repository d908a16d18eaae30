"""VeRe (Ma et al., ICSE 2024): verification-guided neuron ranking and patch synthesis, on the
dense ReLU tail of a classifier, in numpy.

- Bounds: CROWN (Zhang et al., NeurIPS 2018) backward linear relaxation of the sub-network g
  that follows the check layer, over a box in which one check-layer neuron ranges over an
  interval and the others keep their values (the original calls auto_LiRPA's "backward
  (CROWN)"; this is the same relaxation, written out for Linear / ReLU chains).
- Ranking: for each neuron and each interval of a grid over its value range, the CROWN lower
  bound of the margin (true − predicted logit) of every misclassified input, evaluated at the
  interval's two ends, minus the original margin; a neuron's effect on an input is the best of
  these (clipped at 0), min-max normalised across neurons per input and summed over inputs.
- Patch: for the top neuron, each misclassified input gets a target interval — the nearest one
  on which the margin's lower bound is positive at both ends (so every value in it provably
  fixes that input), else the grid point with the largest bound — and each correctly classified
  input its current value; a mini-network (the neuron's in-weights, ReLU, then a scalar affine
  map) is trained to put the neuron's value inside the targets, then folded into the weights.
  This repeats for `rounds` neurons, keeping a round only when it raises repair accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

INF = float("inf")


@dataclass
class Layer:
    w: np.ndarray  # (in, out)
    b: np.ndarray
    relu: bool


# ---- CROWN -----------------------------------------------------------------------------


def _relu_relaxation(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CROWN's linear bounds of relu(z) for z in [lo, hi]: lower alpha*z, upper s*z + t.
    Unstable neurons take the upper chord and alpha = 1 when hi >= -lo, else 0 (the
    adaptive lower line of CROWN)."""
    active, dead = lo >= 0, hi <= 0
    unstable = ~(active | dead)
    denom = np.where(unstable, hi - lo, 1.0)
    s = np.where(active, 1.0, np.where(unstable, hi / denom, 0.0))
    t = np.where(unstable, -hi * lo / denom, 0.0)
    alpha = np.where(active, 1.0, np.where(unstable, (hi >= -lo).astype(float), 0.0))
    return alpha, s, t


def _backward(layers: list[Layer], upto: int, spec: np.ndarray, bounds: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Linear lower bound spec · z_upto >= lA · x + lbias over the input box, given the
    pre-activation bounds of layers < upto. spec: (B, m, out_upto); returns lA (B, m, d), lbias (B, m)."""
    lam = spec
    bias = lam @ layers[upto].b
    lam = lam @ layers[upto].w.T                             # coefficients on a_{upto-1}
    for j in range(upto - 1, -1, -1):
        if layers[j].relu:
            lo, hi = bounds[j]
            alpha, s, t = _relu_relaxation(lo, hi)
            pos, neg = np.maximum(lam, 0.0), np.minimum(lam, 0.0)
            bias = bias + (neg @ t[:, :, None])[:, :, 0]
            lam = pos * alpha[:, None, :] + neg * s[:, None, :]
        bias = bias + lam @ layers[j].b
        lam = lam @ layers[j].w.T
    return lam, bias


def _concretise_lower(lA: np.ndarray, lbias: np.ndarray, xl: np.ndarray, xu: np.ndarray) -> np.ndarray:
    centre, radius = (xl + xu) / 2.0, (xu - xl) / 2.0
    return (lA @ centre[:, :, None])[:, :, 0] - (np.abs(lA) @ radius[:, :, None])[:, :, 0] + lbias


def crown_margin_bound(layers: list[Layer], xl: np.ndarray, xu: np.ndarray, spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CROWN lower bound of spec · logits over the box [xl, xu] (B, d) for a chain of dense
    layers; intermediate pre-activation bounds are CROWN bounds too. spec: (B, m, classes).
    Returns the linear bound (lA (B, m, d), lbias (B, m))."""
    bounds: list[tuple[np.ndarray, np.ndarray]] = []
    b = len(xl)
    for j in range(len(layers) - 1):
        if not layers[j].relu:
            bounds.append((np.zeros(0), np.zeros(0)))
            continue
        if j == 0:
            # For the first affine layer CROWN's bounds are the exact interval bounds.
            centre = (xl + xu) / 2.0 @ layers[0].w + layers[0].b
            radius = (xu - xl) / 2.0 @ np.abs(layers[0].w)
            bounds.append((centre - radius, centre + radius))
            continue
        eye = np.broadcast_to(np.eye(layers[j].w.shape[1]), (b, layers[j].w.shape[1], layers[j].w.shape[1]))
        la, lb = _backward(layers, j, eye, bounds)
        ua, ub = _backward(layers, j, -eye, bounds)
        bounds.append((_concretise_lower(la, lb, xl, xu), -_concretise_lower(ua, ub, xl, xu)))
    return _backward(layers, len(layers) - 1, spec, bounds)


def forward(layers: list[Layer], x: np.ndarray) -> list[np.ndarray]:
    acts = [x]
    for layer in layers:
        z = acts[-1] @ layer.w + layer.b
        acts.append(np.maximum(z, 0.0) if layer.relu else z)
    return acts


# ---- ranking ----------------------------------------------------------------------------


@dataclass
class Ranking:
    order: np.ndarray            # neurons, most significant first
    scores: np.ndarray           # per neuron
    grid: np.ndarray             # (neurons, intervals, 2) interval ends
    effect: np.ndarray           # (neurons, points, intervals, 2) bound − original margin at each end
    original: np.ndarray         # (points,) original margins


def interval_grid(values: np.ndarray, intervals: int, spread: float) -> np.ndarray:
    """Per neuron, `intervals` equal intervals over [min − spread·range, max + spread·range] of
    its observed values."""
    lo, hi = values.min(axis=0), values.max(axis=0)
    span = np.maximum(hi - lo, 1e-6)
    start, stop = lo - spread * span, hi + spread * span
    edges = start[:, None] + (stop - start)[:, None] * np.linspace(0.0, 1.0, intervals + 1)[None, :]
    return np.stack([edges[:, :-1], edges[:, 1:]], axis=2)


def rank_neurons(g: list[Layer], h: np.ndarray, y: np.ndarray, grid: np.ndarray,
                 should_stop: Callable[[], bool] = lambda: False,
                 progress: Callable[[float], None] = lambda f: None) -> Ranking:
    """VeRe's repair significance of every neuron of the check layer whose values on the
    misclassified inputs are h (P, n), g the layers after it."""
    p, n = h.shape
    logits = forward(g, h)[-1]
    pred = logits.argmax(axis=1)
    original = logits[np.arange(p), y] - logits[np.arange(p), pred]
    n_cls = logits.shape[1]
    spec = np.zeros((p, 1, n_cls))
    spec[np.arange(p), 0, y] += 1.0
    spec[np.arange(p), 0, pred] -= 1.0
    k = grid.shape[1]
    effect = np.zeros((n, p, k, 2))
    for neuron in range(n):
        if should_stop():
            break
        xl = np.repeat(h[None], k, axis=0)             # (k, P, n)
        xu = xl.copy()
        xl[:, :, neuron] = grid[neuron, :, 0][:, None]
        xu[:, :, neuron] = grid[neuron, :, 1][:, None]
        xl, xu = xl.reshape(k * p, n), xu.reshape(k * p, n)
        lA, lb = crown_margin_bound(g, xl, xu, np.tile(spec, (k, 1, 1)))
        at_lo = np.einsum("bd,bd->b", lA[:, 0], xl) + lb[:, 0]
        at_hi = np.einsum("bd,bd->b", lA[:, 0], xu) + lb[:, 0]
        effect[neuron, :, :, 0] = (at_lo.reshape(k, p) - original).T
        effect[neuron, :, :, 1] = (at_hi.reshape(k, p) - original).T
        progress((neuron + 1) / n)
    per_input = np.maximum(effect.max(axis=(2, 3)), 0.0)      # (n, P)
    lo, hi = per_input.min(axis=0), per_input.max(axis=0)
    span = hi - lo
    normalised = np.where(span > 0, (per_input - lo) / np.where(span > 0, span, 1.0), 0.0)
    scores = normalised.sum(axis=1)
    # Stable order: ties keep the lower index first.
    order = np.argsort(-scores, kind="stable")
    return Ranking(order, scores, grid, effect, original)


def targets_for(neuron: int, ranking: Ranking, current: np.ndarray) -> np.ndarray:
    """(P, 2) target interval of the neuron per misclassified input (see the module doc)."""
    effect, grid, original = ranking.effect[neuron], ranking.grid[neuron], ranking.original
    out = np.empty((len(original), 2))
    for i in range(len(original)):
        entirely = np.nonzero((effect[i, :, 0] + original[i] > 0) & (effect[i, :, 1] + original[i] > 0))[0]
        if len(entirely):
            dist = np.minimum(np.abs(grid[entirely, 0] - current[i]), np.abs(grid[entirely, 1] - current[i]))
            best = entirely[int(np.argmin(dist))]
            out[i] = grid[best]
        else:
            j, e = np.unravel_index(int(np.argmax(effect[i])), effect[i].shape)
            out[i] = grid[j, e] if effect[i, j, e] > 0 else current[i]
    return out


# ---- patch synthesis -------------------------------------------------------------------


@dataclass
class MiniNet:
    w: np.ndarray
    b: float
    w2: float = 1.0
    b2: float = 0.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.w2 * np.maximum(x @ self.w + self.b, 0.0) + self.b2


def interval_loss(out: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Squared distance to the target interval (0 inside it)."""
    return (out - np.clip(out, lo, hi)) ** 2


def train_mininet(net: MiniNet, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, epochs: int, lr: float,
                  batch_size: int, rng: np.random.Generator, should_stop: Callable[[], bool] = lambda: False) -> MiniNet:
    """Adam on the interval loss, as the original trains its mini-network."""
    params = [net.w.copy(), np.array(net.b, float), np.array(net.w2, float), np.array(net.b2, float)]
    m = [np.zeros_like(q) for q in params]
    v = [np.zeros_like(q) for q in params]
    step, b1, b2, eps = 0, 0.9, 0.999, 1e-8
    for _ in range(epochs):
        if should_stop():
            break
        order = rng.permutation(len(x))
        for s in range(0, len(x), batch_size):
            idx = order[s:s + batch_size]
            w, b, w2, c = params
            u = x[idx] @ w + b
            r = np.maximum(u, 0.0)
            out = w2 * r + c
            d = out - np.clip(out, lo[idx], hi[idx])
            if not np.any(d):
                continue
            g_out = 2.0 * d / len(idx)
            g_u = g_out * w2 * (u > 0)
            grads = [x[idx].T @ g_u, np.array(g_u.sum()), np.array((g_out * r).sum()), np.array(g_out.sum())]
            step += 1
            for q, gq, mq, vq in zip(params, grads, m, v, strict=True):
                mq *= b1
                mq += (1 - b1) * gq
                vq *= b2
                vq += (1 - b2) * gq * gq
                q -= lr * (mq / (1 - b1 ** step)) / (np.sqrt(vq / (1 - b2 ** step)) + eps)
    return MiniNet(params[0], float(params[1]), float(params[2]), float(params[3]))


def fold(layers: list[Layer], j: int, neuron: int, net: MiniNet) -> list[Layer]:
    """New weights: the neuron's in-weights and bias from the mini-network, its scalar affine
    map folded into the next layer's weights and bias."""
    out = [Layer(layer.w.copy(), layer.b.copy(), layer.relu) for layer in layers]
    out[j].w[:, neuron] = net.w
    out[j].b[neuron] = net.b
    nxt = out[j + 1]
    row = layers[j + 1].w[neuron].copy()
    nxt.b += net.b2 * row
    nxt.w[neuron] = net.w2 * row
    return out


@dataclass
class Config:
    check_layer: int = 0      # which hidden dense layer's neurons are analysed (index among them)
    rounds: int = 3           # neurons repaired one after another
    intervals: int = 10
    spread: float = 0.5
    local_epochs: int = 30
    learning_rate: float = 0.01
    batch_size: int = 64
    ratio: int = 10           # correctly classified inputs kept per misclassified one
    max_failing: int = 128
    patience: int = 2


@dataclass
class Round:
    neuron: int
    score: float
    accuracy: float
    accepted: bool


@dataclass
class VeReResult:
    layers: list[Layer]
    hidden: int                          # tail index of the analysed layer
    rounds: list[Round] = field(default_factory=list)
    first_ranking: Ranking | None = None
    start_accuracy: float = 0.0
    accuracy: float = 0.0


def hidden_layers(layers: list[Layer]) -> list[int]:
    """Tail indices of hidden dense ReLU layers followed by another dense layer."""
    return [i for i, layer in enumerate(layers[:-1]) if layer.relu]


def repair(layers: list[Layer], a0: np.ndarray, y: np.ndarray, cfg: Config, rng: np.random.Generator,
           should_stop: Callable[[], bool] = lambda: False,
           progress: Callable[[float, str], None] = lambda f, s: None) -> VeReResult:
    """VeRe on the dense tail `layers` with tail inputs a0 of the repair split, labels y."""
    j = hidden_layers(layers)[cfg.check_layer]
    current = [Layer(layer.w.copy(), layer.b.copy(), layer.relu) for layer in layers]

    def accuracy(ls):
        return float((forward(ls, a0)[-1].argmax(axis=1) == y).mean())

    result = VeReResult(current, j, start_accuracy=accuracy(current))
    best_acc, stale = result.start_accuracy, 0
    for rnd in range(cfg.rounds):
        if should_stop():
            break
        acts = forward(current, a0)
        pred = acts[-1].argmax(axis=1)
        wrong = np.nonzero(pred != y)[0]
        if len(wrong) == 0:
            break
        if len(wrong) > cfg.max_failing:
            wrong = np.sort(rng.choice(wrong, size=cfg.max_failing, replace=False))
        right = np.nonzero(pred == y)[0]
        take = min(len(right), cfg.ratio * len(wrong))
        right = np.sort(rng.choice(right, size=take, replace=False)) if take else right[:0]
        h = acts[j + 1]
        grid = interval_grid(h[np.concatenate([wrong, right])], cfg.intervals, cfg.spread)
        ranking = rank_neurons(current[j + 1:], h[wrong], y[wrong], grid, should_stop,
                               lambda f, r=rnd: progress((r + 0.8 * f) / cfg.rounds, "rank"))
        if result.first_ranking is None:
            result.first_ranking = ranking
        neuron = int(ranking.order[0])
        tgt = targets_for(neuron, ranking, h[wrong, neuron])
        x_in = np.concatenate([acts[j][wrong], acts[j][right]])
        keep = h[right, neuron]
        lo = np.concatenate([tgt[:, 0], keep])
        hi = np.concatenate([tgt[:, 1], keep])
        net = train_mininet(MiniNet(current[j].w[:, neuron].copy(), float(current[j].b[neuron])), x_in, lo, hi,
                            cfg.local_epochs, cfg.learning_rate, cfg.batch_size, rng, should_stop)
        candidate = fold(current, j, neuron, net)
        acc = accuracy(candidate)
        accepted = acc > best_acc
        result.rounds.append(Round(neuron, float(ranking.scores[neuron]), acc, accepted))
        if accepted:
            current, best_acc, stale = candidate, acc, 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
        progress((rnd + 1) / cfg.rounds, "patch")
    result.layers, result.accuracy = current, best_acc
    return result
