"""CARE (Sun, Sun, Pham, Shi; ICSE 2022) on a Keras model, as the original tool runs it: the job's
ONNX model is carried into Keras by the SDK's bridge (parity-gated), CARE works on Keras layers
and tensors with TensorFlow, and the repaired Keras model goes back to ONNX (parity-gated).

1. Split the network before a Dense layer: h = the input of the `layer`-th Dense layer from the
   end (a Keras sub-model computes it), the tail = that Dense and every layer after it, replayed
   in order (the tool likewise splits its Keras model into a head and a tail).
2. Causal analysis: for each neuron i of h and `steps` values v evenly spaced over the range h_i
   takes on the repair inputs, intervene do(h_i = v) on the failing repair inputs and measure the
   mean probability of the correct label; the causal effect is its spread (max - min).
3. The top `neurons` neurons get factors r (h_i <- r_i h_i) found by particle-swarm optimisation
   (pyswarms GlobalBestPSO, particles starting at 1) minimising
   (1 - alpha) * (failing repair inputs still wrong) + alpha * (1 - accuracy on passing ones).
4. The factors are folded into the Dense layer's kernel rows (set_weights), so the repaired Keras
   model is the same network with one changed weight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np


class SplitError(ValueError):
    """The Keras model has no Dense layer CARE can split before (the message says why)."""


@dataclass
class CareConfig:
    layer: int = 1
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
    max_passing: int = 0

    @classmethod
    def from_params(cls, params: dict) -> CareConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def validate(self) -> None:
        for name in ("layer", "neurons", "steps", "particles", "iterations", "ftol_iter"):
            least = 2 if name == "steps" else 1
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be at least {least}, not {getattr(self, name)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], not {self.alpha}")
        if self.bound <= 1.0:
            raise ValueError(f"bound must exceed 1 (the factors start at 1), not {self.bound}")
        if self.max_passing < 0:
            raise ValueError("max_passing must be >= 0")


class KerasSplit:
    """h = the chosen Dense layer's input; tail(h) = the Dense layer and the layers after it."""

    def __init__(self, model, layer: int):
        import keras

        self.model = model
        chain = [lyr for lyr in model.layers if not isinstance(lyr, keras.layers.InputLayer)]
        dense = [i for i, lyr in enumerate(chain) if isinstance(lyr, keras.layers.Dense)]
        # A Dense layer with only reshapes before it reads the model input: it has no hidden h.
        hidden = [i for i in dense if any(chain[j].weights for j in range(i))]
        if not hidden:
            raise SplitError("the model has no Dense layer after a hidden layer to split at")
        if layer > len(hidden):
            raise SplitError(f"layer={layer} but the model has only {len(hidden)} Dense layer(s) after a hidden layer")
        start = hidden[-layer]
        # Replayed in order: right for a chain, checked against the whole model in `repair`.
        self.tail_layers = chain[start:]
        self.dense = chain[start]
        self.head = keras.Model(model.inputs, self.dense.input)

    def verify(self, x: np.ndarray, h: np.ndarray | None = None) -> None:
        """SplitError unless replaying the tail on h reproduces the whole model's output (a
        converted Add with a constant, for one, is a two-input Lambda that cannot be replayed)."""
        h = self.features(x) if h is None else h
        whole = np.asarray(self.model.predict(x, batch_size=256, verbose=0), dtype=np.float64)
        try:
            scores = self.tail(h)
        except Exception as exc:  # TensorFlow raises its own error types from a wrong replay
            raise SplitError(f"the layers after {self.dense.name!r} cannot be replayed as a chain "
                             f"({type(exc).__name__}), so CARE's tail could not be split off") from None
        if scores.shape != whole.shape or not np.allclose(scores, whole, atol=1e-5, rtol=1e-5):
            raise SplitError(f"the layers after {self.dense.name!r} are not a single chain: replaying them does not "
                             "reproduce the model's output, so the tail could not be split off")

    def features(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.head.predict(x, batch_size=256, verbose=0), dtype=np.float32)

    def tail(self, h: np.ndarray) -> np.ndarray:
        if len(h) == 0:  # TensorFlow's CPU softmax refuses an empty batch
            return np.zeros((0, int(self.model.outputs[0].shape[-1])))
        t = h
        for lyr in self.tail_layers:
            t = lyr(t, training=False)
        return np.asarray(t, dtype=np.float64)


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Softmax unless the rows already are distributions (a softmax output layer)."""
    if np.all(scores >= 0) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-4):
        return scores
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def causal_effects(split: KerasSplit, h: np.ndarray, y: np.ndarray, steps: int, lo: np.ndarray, hi: np.ndarray,
                   should_stop: Callable[[], bool] = lambda: False,
                   progress: Callable[[float], None] = lambda f: None) -> np.ndarray:
    """Per neuron: spread of the mean correct-label probability over do(h_i = v) interventions.
    All `steps` interventions on one neuron run as one batch through the tail."""
    rows = np.arange(len(y))
    effects = np.zeros(h.shape[1])
    for i in range(h.shape[1]):
        if should_stop():
            break
        values = np.linspace(lo[i], hi[i], steps)
        do = np.repeat(h[None], steps, axis=0)
        do[:, :, i] = values[:, None]
        p = probabilities(split.tail(do.reshape(-1, h.shape[1]))).reshape(steps, len(y), -1)
        attr = p[:, rows, y].mean(axis=1)
        effects[i] = float(attr.max() - attr.min())
        if i % 8 == 0:
            progress((i + 1) / h.shape[1])
    return effects


@dataclass
class CareResult:
    model: object | None   # the repaired Keras model, or None
    layer: str
    ranking: list[tuple[int, float]]
    chosen: list[int]
    factors: np.ndarray
    metrics: dict[str, float]


def repair(model, x: np.ndarray, y: np.ndarray, config: CareConfig, seed: int,
           should_stop: Callable[[], bool] = lambda: False,
           progress: Callable[[float, str, dict], None] = lambda f, s, m: None) -> CareResult:
    import pyswarms as ps

    config.validate()
    split = KerasSplit(model, config.layer)
    h = split.features(x)
    if h.ndim != 2:
        raise SplitError(f"the Dense layer {split.dense.name!r} reads a rank-{h.ndim} tensor; CARE's neurons are "
                         "the features of a flat hidden layer")
    split.verify(x, h)
    scores = split.tail(h)
    wrong = scores.argmax(axis=1) != y
    if not wrong.any():
        raise ValueError("no repair input is misclassified; nothing to repair")
    rng = np.random.default_rng(seed)
    passing = np.flatnonzero(~wrong)
    if config.max_passing and len(passing) > config.max_passing:
        passing = np.sort(rng.choice(passing, config.max_passing, replace=False))
    failing = np.flatnonzero(wrong)
    lo, hi = h.min(axis=0), h.max(axis=0)
    progress(0.0, "causal analysis", {"neurons_analysed": float(h.shape[1])})
    effects = causal_effects(split, h[failing], y[failing], config.steps, lo, hi, should_stop,
                             lambda f: progress(0.4 * f, "causal analysis", {}))
    order = np.argsort(-effects, kind="stable")
    ranking = [(int(i), float(effects[i])) for i in order]
    chosen = [int(i) for i in order[: min(config.neurons, h.shape[1])]]
    h_fail, y_fail, h_pass, y_pass = h[failing], y[failing], h[passing], y[passing]

    def cost_of(r: np.ndarray) -> tuple[float, int, int]:
        hf, hp = h_fail.copy(), h_pass.copy()
        hf[:, chosen] *= r
        hp[:, chosen] *= r
        fixed = int((split.tail(hf).argmax(axis=1) == y_fail).sum())
        kept = int((split.tail(hp).argmax(axis=1) == y_pass).sum()) if len(y_pass) else 0
        acc = kept / len(y_pass) if len(y_pass) else 1.0
        return (1.0 - config.alpha) * (1.0 - fixed / len(y_fail)) + config.alpha * (1.0 - acc), fixed, kept

    original_cost, _, original_kept = cost_of(np.ones(len(chosen)))
    best = {"cost": original_cost, "pos": np.ones(len(chosen)), "fixed": 0, "kept": original_kept}
    state = {"iteration": 0}

    class _Stop(Exception):
        pass

    def objective(positions: np.ndarray) -> np.ndarray:
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
    saved = np.random.get_state()  # pyswarms draws from numpy's global generator
    np.random.seed(seed % (2**32))
    try:
        optimizer = ps.single.GlobalBestPSO(
            n_particles=config.particles, dimensions=k, options={"c1": config.c1, "c2": config.c2, "w": config.w},
            bounds=(np.full(k, -config.bound), np.full(k, config.bound)), init_pos=np.ones((config.particles, k)),
            ftol=config.ftol, ftol_iter=config.ftol_iter)
        try:
            optimizer.optimize(objective, iters=config.iterations, verbose=False)
        except _Stop:
            pass
    finally:
        np.random.set_state(saved)

    metrics = {"failing": float(len(failing)), "passing": float(len(passing)), "fixed": float(best["fixed"]),
               "broken": float(original_kept - best["kept"]), "cost_before": original_cost,
               "cost_after": best["cost"], "iterations": float(state["iteration"])}
    repaired = None
    if best["cost"] < original_cost:
        # The model is the job's own converted copy: the factors go into its Dense kernel in place.
        kernel, *rest = split.dense.get_weights()
        kernel = kernel.copy()
        kernel[chosen, :] *= best["pos"][:, None].astype(kernel.dtype)  # Dense kernels are (in, out)
        split.dense.set_weights([kernel, *rest])
        repaired = model
    return CareResult(repaired, split.dense.name, ranking, chosen, best["pos"], metrics)
