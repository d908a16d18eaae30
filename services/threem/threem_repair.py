"""3M-DNN (Refaeli & Katz, NSV 2022): minimal multi-layer modification of a DNN.

The network's dense tail is split at separation layers into sub-networks of one modified
layer each. A proposal fixes new values of every separation layer on the misclassified
points; each sub-network then needs a single-layer modification (Goldberger et al., LPAR
2020): the smallest change of its layer's weights that maps its (fixed) input values to the
proposed output values, or, for the last sub-network, to the correct class. With the input of
a layer fixed its output is linear in the layer's weights, so each such query is an LP (here
HiGHS; the original asks the Marabou verifier). The change of a proposal is the largest L∞
(or L1) change over the modified layers; a heuristic search over proposals keeps the best
change found so far (anytime), starting from the single-layer modification of the last layer
(the proposal "separation values unchanged").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fixbench.sdk.min_change_lp import LPResult, Rows, min_change

INF = float("inf")
SEARCHES = ("greedy", "random")


@dataclass
class Config:
    layers: int = 2             # modified layers: 1 = the last only (single-layer), 2 = split once, ...
    search: str = "greedy"      # heuristic over separation-layer proposals
    steps: int = 8              # proposals tried after the single-layer start
    step_size: float = 0.25     # proposal move, relative to the separation values' mean magnitude
    norm: str = "linf"
    margin: float = 0.05        # required correct-class lead on the repaired points (logit units)
    max_points: int = 32        # misclassified points repaired (0 = all)
    lp_seconds: float = 60.0    # cap per LP (also bounded by the job's remaining budget)

    def validate(self) -> None:
        if self.layers < 1:
            raise ValueError("layers must be >= 1")
        if self.search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, not {self.search!r}")
        if self.norm not in ("linf", "l1"):
            raise ValueError(f"norm must be linf or l1, not {self.norm!r}")
        if self.steps < 0 or self.max_points < 0:
            raise ValueError("steps and max_points must be >= 0")
        if not (self.margin >= 0 and self.step_size > 0 and self.lp_seconds > 0):
            raise ValueError("margin must be >= 0, step_size and lp_seconds > 0")


@dataclass
class Layer:
    """What the search needs of one dense layer: w (in, out), b, ReLU after it."""

    w: np.ndarray
    b: np.ndarray
    relu: bool


@dataclass
class Result:
    weights: dict[int, tuple[np.ndarray, np.ndarray]]   # new (w, b) per modified tail layer index
    change: float                                        # the objective: max over layers of the norm of the change
    per_layer: dict[int, float]
    statuses: list[str]
    proposals: int
    best_proposal: int
    notes: list[str] = field(default_factory=list)


def _act(z: np.ndarray, relu: bool) -> np.ndarray:
    return np.maximum(z, 0.0) if relu else z


def _norm(d: np.ndarray, norm: str) -> float:
    return float(np.abs(d).max(initial=0.0)) if norm == "linf" else float(np.abs(d).sum())


def classification_rows(a: np.ndarray, z: np.ndarray, y: np.ndarray, margin: float) -> Rows:
    """Rows for Δ = (ΔW (in, out) row-major, Δb (out)) of a last layer with inputs a (P, in)
    and current outputs z (P, out): (z + a ΔW + Δb)_y - (...)_c >= margin for every c != y."""
    p, n_in = a.shape
    n_out = z.shape[1]
    rows = Rows(n_in * n_out + n_out)
    a1 = np.concatenate([a, np.ones((p, 1))], axis=1)
    base = np.concatenate([np.arange(n_in) * n_out, [n_in * n_out]])  # column of (i, 0) and of b_0
    for k in range(p):
        t = int(y[k])
        for c in range(n_out):
            if c == t:
                continue
            idx = np.concatenate([base + t, base + c])
            val = np.concatenate([a1[k], -a1[k]])
            rows.add(idx, val, margin - float(z[k, t] - z[k, c]), INF)
    return rows


def unit_target_rows(a: np.ndarray, z: np.ndarray, target: np.ndarray, relu: bool) -> Rows:
    """Rows for one hidden unit's (Δw (in), Δb) making its value on inputs a equal `target`
    (post-activation): the pre-activation equals a positive target and is <= 0 where a ReLU
    target is 0. Units do not share weights, so each unit is its own LP (the L∞ / L1 optimum
    of the layer is the max / sum over units)."""
    p, n_in = a.shape
    rows = Rows(n_in + 1)
    a1 = np.concatenate([a, np.ones((p, 1))], axis=1)
    cols = np.arange(n_in + 1)
    for k in range(p):
        if relu and target[k] <= 0:
            rows.add(cols, a1[k], -INF, -float(z[k]))
        else:
            need = float(target[k] - z[k])
            rows.add(cols, a1[k], need, need)
    return rows


def split_delta(delta: np.ndarray, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    return delta[: n_in * n_out].reshape(n_in, n_out), delta[n_in * n_out:]


class ThreeM:
    """The search over separation-layer values for one set of misclassified points."""

    def __init__(self, layers: list[Layer], a0: np.ndarray, y: np.ndarray, config: Config, rng: np.random.Generator,
                 time_left: Callable[[], float] = lambda: INF, log: Callable[[str], None] = lambda s: None):
        self.layers, self.a0, self.y, self.cfg, self.rng = layers, a0, y, config, rng
        self.time_left, self.log = time_left, log
        n = len(layers)
        self.k = min(config.layers, n)
        self.modified = list(range(n - self.k, n))          # tail indices of the modified layers
        # Values of every layer on the points with the original weights.
        acts = [a0]
        for layer in layers:
            acts.append(_act(acts[-1] @ layer.w + layer.b, layer.relu))
        self.acts = acts
        self.statuses: list[str] = []

    def _lp_time(self) -> float:
        return max(0.05, min(self.cfg.lp_seconds, self.time_left() / 2.0))

    def evaluate(self, separations: list[np.ndarray]) -> tuple[float, dict[int, tuple[np.ndarray, np.ndarray]], dict[int, float]] | None:
        """The change needed for proposed values of the separation layers (the outputs of the
        modified layers but the last), or None when a single-layer query has no solution."""
        weights: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        per_layer: dict[int, float] = {}
        first = self.modified[0]
        inputs = self.acts[first]  # the first modified layer reads unmodified values
        # Layers before the first modified one are unchanged, so are their values.
        for pos, li in enumerate(self.modified):
            layer = self.layers[li]
            z = inputs @ layer.w + layer.b
            if li == self.modified[-1]:
                res: LPResult = min_change(classification_rows(inputs, z, self.y, self.cfg.margin), self.cfg.norm,
                                           self._lp_time(), seed=0)
                self.statuses.append(res.status)
                if not res.ok:
                    return None
                dw, db = split_delta(res.delta, *layer.w.shape)
                per_layer[li] = _norm(res.delta, self.cfg.norm)
            else:
                found = self._hidden_change(layer, inputs, z, separations[pos])
                if found is None:
                    return None
                dw, db, per_layer[li] = found
                inputs = separations[pos]
            weights[li] = (layer.w + dw, layer.b + db)
        return max(per_layer.values()), weights, per_layer

    def _hidden_change(self, layer: Layer, a: np.ndarray, z: np.ndarray, target: np.ndarray):
        """The minimal change of a hidden layer producing `target` from `a`: one LP per unit
        whose target differs from what it computes now."""
        dw = np.zeros_like(layer.w)
        db = np.zeros_like(layer.b)
        current = _act(z, layer.relu)
        sizes = [0.0]
        for o in range(layer.w.shape[1]):
            if np.allclose(current[:, o], target[:, o], atol=1e-9):
                continue
            res = min_change(unit_target_rows(a, z[:, o], target[:, o], layer.relu), self.cfg.norm, self._lp_time())
            self.statuses.append(res.status)
            if not res.ok:
                return None
            dw[:, o], db[o] = res.delta[:-1], res.delta[-1]
            sizes.append(_norm(res.delta, self.cfg.norm))
        total = max(sizes) if self.cfg.norm == "linf" else float(sum(sizes))
        return dw, db, total

    def _margin_gradient(self, h: np.ndarray) -> np.ndarray:
        """d(correct − best wrong logit)/d(last separation values), through the fixed last layer."""
        last = self.layers[self.modified[-1]]
        z = h @ last.w + last.b
        other = z.copy()
        other[np.arange(len(z)), self.y] = -INF
        wrong = other.argmax(axis=1)
        return (last.w[:, self.y] - last.w[:, wrong]).T

    def run(self, should_stop: Callable[[], bool] = lambda: False,
            progress: Callable[[int, float], None] = lambda i, c: None) -> Result:
        seps = [self.acts[li + 1].copy() for li in self.modified[:-1]]
        best = self.evaluate(seps)
        best_at, tried = 0, 1
        if best is None:
            self.log(f"the single-layer start has no solution ({self.statuses[-1]})")
        progress(0, best[0] if best else INF)
        current = [s.copy() for s in seps]
        for step in range(1, self.cfg.steps + 1):
            if not seps or should_stop():
                break
            proposal = [s.copy() for s in current]
            # Step sizes shrink in a cycle (1, 1/2, 1/4, 1/8 of step_size): a large move makes the
            # last layer's change small but the separation layer's large, and the best
            # trade-off lies in between.
            shrink = 0.5 ** ((step - 1) % 4)
            for i, s in enumerate(proposal):
                scale = shrink * self.cfg.step_size * max(float(np.abs(self.acts[self.modified[i] + 1]).mean()), 1e-6)
                if self.cfg.search == "greedy" and i == len(proposal) - 1:
                    g = self._margin_gradient(s)
                    g /= np.maximum(np.abs(g).max(axis=1, keepdims=True), 1e-12)
                    move = g * scale * self.rng.uniform(0.5, 1.5)
                else:
                    move = self.rng.normal(0.0, scale, size=s.shape)
                if self.layers[self.modified[i]].relu:
                    # Only active units move: waking an inactive unit means lifting a
                    # pre-activation that may be far below zero, a large weight change.
                    active = self.acts[self.modified[i] + 1] > 0
                    s += move * active
                    np.maximum(s, 0.0, out=s)
                else:
                    s += move
            found = self.evaluate(proposal)
            tried += 1
            if found is not None and (best is None or found[0] < best[0]):
                best, best_at, current = found, step, proposal
            progress(step, best[0] if best else INF)
        if best is None:
            raise NoSolution(self.statuses)
        change, weights, per_layer = best
        return Result(weights, change, per_layer, self.statuses, tried, best_at)


class NoSolution(RuntimeError):
    """No proposal gave a solvable set of single-layer queries."""

    def __init__(self, statuses: list[str]):
        self.statuses = statuses
        last = statuses[-1] if statuses else "no LP was solved"
        super().__init__(f"no modification found: every proposal had an unsolvable single-layer query "
                         f"(last HiGHS status: {last}; {len(statuses)} LPs)")


def single_layer_change(layer: Layer, a: np.ndarray, y: np.ndarray, margin: float, norm: str = "linf",
                        time_limit: float = 60.0) -> LPResult:
    """Goldberger et al.'s single-layer modification of a last layer (used by the tests as the
    hand-checkable reference)."""
    return min_change(classification_rows(a, a @ layer.w + layer.b, y, margin), norm, time_limit)

