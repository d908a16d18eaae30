"""CARE (Sun, Sun, Pham, Shi; ICSE 2022): causality-based neuron repair, for misclassifications.

1. Split the network at a hidden layer: h = the activations that feed one dense layer.
2. Causal analysis: for every neuron i of h, intervene do(h_i = v) for `steps` values v evenly
   spaced over the range h_i takes on the analysed inputs, and measure the attribute of
   interest (here the mean probability of the correct label on the failing repair inputs, the
   analogue of the tool's target-class probability). The causal effect score of neuron i is
   the spread (max - min) of that attribute over the interventions, as the tool's row_diff.
3. The top `neurons` neurons are repaired by multiplying their activation by factors found by
   particle-swarm optimisation (pyswarms GlobalBestPSO, particles starting at 1) minimising
   (1 - alpha) * (failing repair inputs still wrong) + alpha * (1 - accuracy on passing ones).
4. The factors are folded into the weights that read those neurons (one column each), so the
   repaired model is the same graph with one changed initializer.

numpy + onnxruntime + pyswarms: every step is forward-only, so no torch is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import onnx

from fixbench.sdk.onnx_split import (
    DenseLayer,
    SplitError,
    Tail,
    activations,
    consumers,
    dense_layers,
    initializer,
    probabilities,
    with_initializers,
)


@dataclass
class CareConfig:
    layer: int = 1  # split before the `layer`-th dense layer from the end (1 = the last)
    neurons: int = 5
    steps: int = 4
    particles: int = 20
    c1: float = 0.41
    c2: float = 0.41
    w: float = 0.8
    bound: float = 10.0
    iterations: int = 100
    ftol: float = 1e-3
    ftol_iter: int = 10
    alpha: float = 0.1
    max_passing: int = 0  # passing repair inputs in the PSO fitness (0 = all)

    @classmethod
    def from_params(cls, params: dict) -> CareConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def validate(self) -> None:
        for name in ("layer", "neurons", "steps", "particles", "iterations", "ftol_iter"):
            if getattr(self, name) < (2 if name == "steps" else 1):
                raise ValueError(f"{name} must be at least {2 if name == 'steps' else 1}, not {getattr(self, name)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], not {self.alpha}")
        if self.bound <= 1.0:
            raise ValueError(f"bound must exceed 1 (the factors start at 1), not {self.bound}")
        if self.max_passing < 0:
            raise ValueError("max_passing must be >= 0")


def split_layer(model: onnx.ModelProto, layer: int) -> DenseLayer:
    """The dense layer whose input is the split point; a clear error when there is none."""
    dense = dense_layers(model)
    # The split must be a hidden layer: the first dense layer reading the model input has none.
    inputs = {i.name for i in model.graph.input}
    hidden = [d for d in dense if d.input not in inputs]
    if not hidden:
        raise SplitError("the model has no dense (Gemm / MatMul) layer after a hidden layer to split at")
    if layer > len(hidden):
        raise SplitError(f"layer={layer} but the model has only {len(hidden)} dense layer(s) after a hidden layer")
    chosen = hidden[-layer]
    readers = consumers(model, chosen.input)
    if len(readers) != 1:
        raise SplitError(f"the hidden tensor {chosen.input!r} feeds {len(readers)} nodes; CARE's factors could "
                         "not be folded into one weight")
    return chosen


def unadaptable_reason(model: onnx.ModelProto, layer: int) -> str | None:
    try:
        split_layer(model, layer)
    except SplitError as exc:
        return str(exc)
    return None


@dataclass
class CareResult:
    model: bytes | None
    layer: DenseLayer
    ranking: list[tuple[int, float]]  # (neuron, causal effect) best first, all neurons
    chosen: list[int]
    factors: np.ndarray
    metrics: dict[str, float]


def causal_effects(tail: Tail, h: np.ndarray, y: np.ndarray, steps: int, lo: np.ndarray, hi: np.ndarray,
                   should_stop: Callable[[], bool] = lambda: False,
                   progress: Callable[[float], None] = lambda f: None) -> np.ndarray:
    """Per neuron: spread of the mean correct-label probability over do(h_i = v) interventions."""
    flat = h.reshape(len(h), -1)
    effects = np.zeros(flat.shape[1])
    rows = np.arange(len(y))
    for i in range(flat.shape[1]):
        if should_stop():
            break
        attr = []
        for v in np.linspace(lo[i], hi[i], steps):
            do = flat.copy()
            do[:, i] = v
            attr.append(float(probabilities(tail.run(do.reshape(h.shape)))[rows, y].mean()))
        effects[i] = max(attr) - min(attr)
        if i % 8 == 0:
            progress((i + 1) / flat.shape[1])
    return effects


def repair(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray, config: CareConfig, seed: int,
           should_stop: Callable[[], bool] = lambda: False,
           progress: Callable[[float, str, dict], None] = lambda f, s, m: None) -> CareResult:
    import pyswarms as ps

    config.validate()
    layer = split_layer(model, config.layer)
    acts = activations(model, [layer.input], x)
    h, scores = acts[layer.input], acts["__output__"]
    wrong = scores.argmax(axis=1) != y
    if not wrong.any():
        raise ValueError("no repair input is misclassified; nothing to repair")
    rng = np.random.default_rng(seed)
    passing = np.flatnonzero(~wrong)
    if config.max_passing and len(passing) > config.max_passing:
        passing = np.sort(rng.choice(passing, config.max_passing, replace=False))
    failing = np.flatnonzero(wrong)
    flat = h.reshape(len(h), -1)
    # The intervention range is what each neuron takes on all repair inputs, as the tool's
    # min/max over the analysed batches.
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    tail = Tail(model, layer.input)
    progress(0.0, "causal analysis", {"neurons_analysed": float(flat.shape[1])})
    effects = causal_effects(tail, h[failing], y[failing], config.steps, lo, hi, should_stop,
                             lambda f: progress(0.4 * f, "causal analysis", {}))
    order = np.argsort(-effects, kind="stable")
    ranking = [(int(i), float(effects[i])) for i in order]
    chosen = [int(i) for i in order[: min(config.neurons, flat.shape[1])]]

    h_fail, y_fail = flat[failing], y[failing]
    h_pass, y_pass = flat[passing], y[passing]
    shape = h.shape[1:]

    def cost_of(r: np.ndarray) -> tuple[float, int, int]:
        hf, hp = h_fail.copy(), h_pass.copy()
        hf[:, chosen] *= r
        hp[:, chosen] *= r
        fixed = int((tail.run(hf.reshape((-1, *shape))).argmax(axis=1) == y_fail).sum())
        kept = int((tail.run(hp.reshape((-1, *shape))).argmax(axis=1) == y_pass).sum()) if len(y_pass) else 0
        violation = 1.0 - fixed / len(y_fail)
        acc = kept / len(y_pass) if len(y_pass) else 1.0
        return (1.0 - config.alpha) * violation + config.alpha * (1.0 - acc), fixed, kept

    original_cost, _, original_kept = cost_of(np.ones(len(chosen)))
    best = {"cost": original_cost, "pos": np.ones(len(chosen)), "fixed": 0, "kept": original_kept}
    state = {"iteration": 0}

    class _Stop(Exception):
        pass

    def objective(positions: np.ndarray) -> np.ndarray:
        # Called once per PSO iteration with every particle's position.
        if should_stop():
            raise _Stop
        costs = np.empty(len(positions))
        for p, pos in enumerate(positions):
            costs[p], fixed, kept = cost_of(pos)
            if costs[p] < best["cost"]:
                best.update(cost=float(costs[p]), pos=pos.copy(), fixed=fixed, kept=kept)
        state["iteration"] += 1
        progress(0.4 + 0.6 * state["iteration"] / config.iterations, "particle swarm",
                 {"best_cost": best["cost"], "fixed": float(best["fixed"])})
        return costs

    k = len(chosen)
    # pyswarms draws from numpy's global generator; seed it from the job for determinism.
    saved = np.random.get_state()
    np.random.seed(seed % (2**32))
    try:
        optimizer = ps.single.GlobalBestPSO(
            n_particles=config.particles, dimensions=k,
            options={"c1": config.c1, "c2": config.c2, "w": config.w},
            bounds=(np.full(k, -config.bound), np.full(k, config.bound)),
            init_pos=np.ones((config.particles, k)), ftol=config.ftol, ftol_iter=config.ftol_iter,
        )
        try:
            optimizer.optimize(objective, iters=config.iterations, verbose=False)
        except _Stop:
            pass
    finally:
        np.random.set_state(saved)

    factors = best["pos"]
    metrics = {
        "failing": float(len(failing)), "passing": float(len(passing)), "fixed": float(best["fixed"]),
        "broken": float(original_kept - best["kept"]), "cost_before": original_cost, "cost_after": best["cost"],
        "iterations": float(state["iteration"]),
    }
    repaired = None
    if best["cost"] < original_cost:
        weight = initializer(model, layer.weight).astype(np.float32).copy()
        axis = layer.input_axis()
        for idx, r in zip(chosen, factors, strict=True):
            if axis == 1:
                weight[:, idx] *= r
            else:
                weight[idx, :] *= r
        repaired = with_initializers(model, {layer.weight: weight})
    return CareResult(repaired, layer, ranking, chosen, factors, metrics)
