"""NeuRecover (Tokui, Tokumoto, Yoshii, Ishikawa, Nakagawa, Munakata, Kikuchi; SANER 2022):
regression-controlled repair with the training history, after the eAI-Repair-Toolkit's
implementation (which extends its Arachne).

Fault localisation, on the dense layers' weight matrices, with M_n the faulty model (the last
epoch) and M_{n-1} the checkpoint of the epoch before:
1. Classify the repair inputs with both: *regressed* inputs (right under M_{n-1}, wrong under
   M_n) and *improved* ones (wrong, then right).
2. Per weight: |W_n - W_{n-1}| (what the last epoch changed), the gradient of the loss on the
   regressed and on the improved inputs, and the forward impact mean |o_i * w_ij| on each.
3. Per layer a suspiciousness fwd_deg / (fwd_deg + fwd_imp) * diff (each normalised over the
   layers) sets how many weights k of that layer are considered; the localised weights are
   top-k(diff) & top-k(fwd_deg) & top-k(grad_deg) minus top-k(fwd_imp) & top-k(grad_imp).
Patch generation: particle-swarm search over the localised weights (Arachne's PSO: 100
particles, 100 iterations, constriction phi = 4.1, stop after 10 iterations without a better
patch, 200 sampled passing inputs) maximising
    (N_patched / |neg| + 1) / (loss_neg + 1) + alpha * (N_intact / |pos| + 1) / (loss_pos + 1)
with alpha = 1.0, the regression penalty (neg: failing repair inputs, pos: passing ones).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import onnx

from fixbench.sdk import Predictor
from fixbench.sdk.onnx_split import (
    DenseLayer,
    SplitError,
    Tail,
    activations,
    dense_layers,
    initializer,
    probabilities,
    torch_tail,
    with_initializers,
)


class NoHistoryError(ValueError):
    """The job carries no earlier-epoch checkpoint of the faulty model."""


@dataclass
class NeuRecoverConfig:
    alpha: float = 1.0
    particles: int = 100
    iterations: int = 100
    patience: int = 10
    positive_samples: int = 200
    phi: float = 4.1
    reduction_rate: float = 1.0
    max_weights: int = 0  # cap on localised weights, largest |W_n - W_{n-1}| first (0 = none)
    fallback_failing: bool = True  # no regressed input: localise on every failing input instead

    @classmethod
    def from_params(cls, params: dict) -> NeuRecoverConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def validate(self) -> None:
        for name in ("particles", "iterations", "patience", "positive_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.alpha < 0 or not 0 < self.reduction_rate <= 1:
            raise ValueError("alpha must be >= 0 and reduction_rate in (0, 1]")
        if self.phi <= 4:
            raise ValueError("phi must exceed 4 (Clerc's constriction)")
        if self.max_weights < 0:
            raise ValueError("max_weights must be >= 0")


def searchable_layers(model: onnx.ModelProto) -> list[DenseLayer]:
    layers = dense_layers(model)
    if not layers:
        raise SplitError("the model has no dense (Gemm / MatMul) layer; NeuRecover localises dense weights")
    return layers


def unadaptable_reason(model: onnx.ModelProto, history_epochs: int) -> str | None:
    if history_epochs < 1:
        return ("no training history: NeuRecover needs the checkpoint of the epoch before the faulty model's "
                "(the job lists none, as for a pretrained model)")
    try:
        searchable_layers(model)
    except SplitError as exc:
        return str(exc)
    return None


@dataclass
class Localised:
    layer: DenseLayer
    index: tuple[int, int]
    score: float  # |W_n - W_{n-1}|


@dataclass
class NeuRecoverResult:
    model: bytes | None
    localised: list[Localised]
    metrics: dict[str, float]


def _order(values: np.ndarray) -> list[tuple[int, int]]:
    """Indices of a matrix, largest |value| first (stable for ties)."""
    flat = np.argsort(-np.abs(values), axis=None, kind="stable")
    return [tuple(int(i) for i in np.unravel_index(f, values.shape)) for f in flat]


def _grads(model: onnx.ModelProto, layers: list[DenseLayer], h0: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """d loss / d W for every dense layer, on inputs whose first-dense-layer input is h0."""
    import torch

    from fixbench.sdk.torch_helpers import classification_loss, outputs_are_probabilities

    if len(y) == 0:
        return [np.zeros_like(initializer(model, layer.weight)) for layer in layers]
    tail = Tail(model, layers[0].input, tuple(layer.weight for layer in layers))
    module = torch_tail(tail)
    weights = [torch.tensor(tail.values[layer.weight], requires_grad=True) for layer in layers]
    out = module(torch.from_numpy(np.ascontiguousarray(h0)), *weights)
    # Cross-entropy whether the graph ends in logits or in a softmax.
    loss_fn = classification_loss(outputs_are_probabilities(out.detach().numpy()))
    loss = loss_fn(out, torch.from_numpy(y.astype(np.int64)))
    loss.backward()
    return [w.grad.numpy().copy() for w in weights]


def _forward_impact(layer: DenseLayer, w: np.ndarray, o: np.ndarray) -> np.ndarray:
    """mean over inputs of |o_i * w_ij| in the weight's own layout."""
    mean_o = np.abs(o.reshape(len(o), -1)).mean(axis=0) if len(o) else np.zeros(layer.in_features)
    return np.abs(w) * (mean_o[None, :] if layer.input_axis() == 1 else mean_o[:, None])


def localise(model: onnx.ModelProto, previous: onnx.ModelProto, x: np.ndarray, y: np.ndarray,
             config: NeuRecoverConfig) -> tuple[list[Localised], dict[str, float]]:
    layers = searchable_layers(model)
    hit_now = Predictor(model.SerializeToString(), threads=1).predict(x) == y
    hit_before = Predictor(previous.SerializeToString(), threads=1).predict(x) == y
    deg = np.flatnonzero(hit_before & ~hit_now)
    imp = np.flatnonzero(~hit_before & hit_now)
    info = {"regressed": float(len(deg)), "improved": float(len(imp))}
    if len(deg) == 0:
        if not config.fallback_failing:
            return [], info
        deg = np.flatnonzero(~hit_now)  # every failing input stands in for the regressed ones
        info["fallback_failing"] = 1.0
    acts = activations(model, [layer.input for layer in layers], x)
    g_deg = _grads(model, layers, acts[layers[0].input][deg], y[deg])
    g_imp = _grads(model, layers, acts[layers[0].input][imp], y[imp])
    w_now = [initializer(model, layer.weight).astype(np.float64) for layer in layers]
    try:
        w_before = [initializer(previous, layer.weight).astype(np.float64) for layer in layers]
    except KeyError as exc:
        raise ValueError(f"the history checkpoint lacks weight {exc}; it is not this model's training history") from exc
    if any(a.shape != b.shape for a, b in zip(w_now, w_before, strict=True)):
        raise ValueError("the history checkpoint's weights differ in shape from the model's")
    diff = [a - b for a, b in zip(w_now, w_before, strict=True)]
    fwd_deg = [_forward_impact(layer, w, acts[layer.input][deg]) for layer, w in zip(layers, w_now, strict=True)]
    fwd_imp = [_forward_impact(layer, w, acts[layer.input][imp]) for layer, w in zip(layers, w_now, strict=True)]

    def norm(per_layer: list[float]) -> np.ndarray:
        v = np.asarray(per_layer, dtype=np.float64)
        return v / v.sum() if v.sum() > 0 else np.zeros_like(v)

    diff_norm = norm([np.abs(d).mean() for d in diff])
    fd_norm = norm([f.mean() for f in fwd_deg])
    fi_norm = norm([f.mean() if len(imp) else 0.0 for f in fwd_imp])
    localised: list[Localised] = []
    for k, layer in enumerate(layers):
        susp = fd_norm[k] / (fd_norm[k] + fi_norm[k]) * diff_norm[k] if fd_norm[k] > 0 else 0.0
        n = int(np.round(diff[k].size * susp * config.reduction_rate))
        if n == 0:
            continue
        top_diff = set(_order(diff[k])[:n])
        top_deg = set(_order(fwd_deg[k])[:n]) & set(_order(g_deg[k])[:n])
        top_imp = (set(_order(fwd_imp[k])[:n]) & set(_order(g_imp[k])[:n])) if len(imp) else set()
        for idx in (top_deg & top_diff) - top_imp:
            localised.append(Localised(layer, idx, float(abs(diff[k][idx]))))
    localised.sort(key=lambda w: (-w.score, w.layer.weight, w.index))
    if config.max_weights:
        localised = localised[: config.max_weights]
    info["localised"] = float(len(localised))
    return localised, info


def repair(model: onnx.ModelProto, history: list[tuple[int, onnx.ModelProto]], x: np.ndarray, y: np.ndarray,
           config: NeuRecoverConfig, seed: int, should_stop: Callable[[], bool] = lambda: False,
           progress: Callable[[float, str, dict], None] = lambda f, s, m: None) -> NeuRecoverResult:
    import pyswarms as ps

    config.validate()
    if not history:
        raise NoHistoryError(unadaptable_reason(model, 0))
    previous = sorted(history, key=lambda e: e[0])[-1][1]
    progress(0.0, "localise", {})
    localised, info = localise(model, previous, x, y, config)
    progress(0.2, "localise", {"localised": float(len(localised))})
    if not localised:
        return NeuRecoverResult(None, [], {**info, "localised": 0.0})

    layers = searchable_layers(model)
    used = sorted({w.layer.weight for w in localised}, key=[layer.weight for layer in layers].index)
    first = next(layer for layer in layers if layer.weight == used[0])
    tail = Tail(model, first.input, tuple(used))
    h = activations(model, [first.input], x)[first.input]
    scores = tail.run(h)
    wrong = scores.argmax(axis=1) != y
    rng = np.random.default_rng(seed)
    neg = np.flatnonzero(wrong)
    pos = np.flatnonzero(~wrong)
    if len(pos) > config.positive_samples:
        pos = np.sort(rng.choice(pos, config.positive_samples, replace=False))
    base = {name: tail.values[name] for name in used}
    slots = [(w.layer.weight, w.index) for w in localised]
    start = np.array([base[name][idx] for name, idx in slots], dtype=np.float64)

    def patched(position: np.ndarray) -> dict[str, np.ndarray]:
        values = {name: v.copy() for name, v in base.items()}
        for (name, idx), value in zip(slots, position, strict=True):
            values[name][idx] = value
        return values

    def evaluate(position: np.ndarray) -> tuple[float, int, int]:
        values = patched(position)
        out = {}
        for tag, idx in (("neg", neg), ("pos", pos)):
            if not len(idx):
                out[tag] = (0, 0.0, 1)
                continue
            p = probabilities(tail.run(h[idx], values))
            loss = float(-np.log(np.clip(p[np.arange(len(idx)), y[idx]], 1e-7, None)).mean())
            out[tag] = (int((p.argmax(axis=1) == y[idx]).sum()), loss, len(idx))
        (n_patched, loss_neg, n_neg), (n_intact, loss_pos, n_pos) = out["neg"], out["pos"]
        fitness = (n_patched / n_neg + 1) / (loss_neg + 1) + config.alpha * (n_intact / n_pos + 1) / (loss_pos + 1)
        return fitness, n_patched, n_intact

    fit0, _, intact0 = evaluate(start)
    best = {"fitness": fit0, "pos": start.copy(), "patched": 0, "intact": intact0, "since": 0}
    state = {"iteration": 0}

    class _Stop(Exception):
        pass

    def objective(positions: np.ndarray) -> np.ndarray:
        if should_stop() or best["since"] >= config.patience:
            raise _Stop
        costs = np.empty(len(positions))
        improved = False
        for p, position in enumerate(positions):
            fitness, n_patched, n_intact = evaluate(position)
            costs[p] = -fitness
            if fitness > best["fitness"]:
                best.update(fitness=fitness, pos=position.copy(), patched=n_patched, intact=n_intact)
                improved = True
        best["since"] = 0 if improved else best["since"] + 1
        state["iteration"] += 1
        progress(0.2 + 0.8 * state["iteration"] / config.iterations, "particle swarm",
                 {"fitness": best["fitness"], "patched": float(best["patched"])})
        return costs

    # Clerc's constriction with phi: the standard PSO equivalent of the toolkit's update rule.
    chi = 2.0 / abs(2.0 - config.phi - np.sqrt(config.phi**2 - 4.0 * config.phi))
    spread = np.array([base[name].std() for name, _ in slots]) + 1e-3
    saved = np.random.get_state()
    np.random.seed(seed % (2**32))
    try:
        # Particles start around the current weights (the first one exactly at them).
        init = start + rng.normal(0.0, 1.0, (config.particles, len(slots))) * spread
        init[0] = start
        optimizer = ps.single.GlobalBestPSO(
            n_particles=config.particles, dimensions=len(slots),
            options={"c1": chi * config.phi / 2, "c2": chi * config.phi / 2, "w": chi},
            init_pos=init, velocity_clamp=None,
        )
        try:
            optimizer.optimize(objective, iters=config.iterations, verbose=False)
        except _Stop:
            pass
    finally:
        np.random.set_state(saved)

    metrics = {**info, "failing": float(len(neg)), "passing_sampled": float(len(pos)),
               "patched": float(best["patched"]), "broken": float(intact0 - best["intact"]),
               "fitness_before": fit0, "fitness_after": best["fitness"], "iterations": float(state["iteration"])}
    repaired = None
    if best["fitness"] > fit0:
        repaired = with_initializers(model, patched(best["pos"]))
    return NeuRecoverResult(repaired, localised, metrics)
