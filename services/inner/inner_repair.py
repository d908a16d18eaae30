"""INNER (Chen, Zhou, Sun, Wang, Xuan, Yang; ISSTA 2024), reconstructed for misclassifications.

1. Representations: the activations that feed the last `rep_layer_num` dense layers (hidden
   tensors only; the model input is no representation).
2. Model probes: per representation, a linear probe (multinomial logistic regression on
   standardised activations, scikit-learn) trained on `probe_train_num` repair inputs to read
   the model's own decision from that layer.
3. Neuron routing: on each misclassified repair input, neuron i's share in the unwanted
   behaviour is z_i * (P[wrong, i] - P[true, i]): how far its (standardised) activation z_i
   routes the probe towards the wrong prediction rather than the true label (P: the probe's
   weights). The score is the mean over the failing inputs; the top `neurons` neurons over
   all probed layers are the fault neurons.
4. Optimisation of the fault neurons: their outgoing weights (one column each of the dense
   layer that reads them) are trained with Adam on `repair_sample_num` repair inputs (every
   failing one, then passing ones) under cross-entropy; every other weight stays fixed. The
   epoch whose model gets most of those inputs right is kept, if it beats the original.

Forward passes run on the tail sub-model (fixbench.sdk.onnx_split) converted to torch with
the trained weights as inputs, so the repaired model is the original graph with new values.
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
    torch_tail,
    with_initializers,
)


@dataclass
class InnerConfig:
    rep_layer_num: int = 3
    probe_train_num: int = 1000
    repair_sample_num: int = 1000
    neurons: int = 10
    epochs: int = 30
    learning_rate: float = 1e-2
    probe_c: float = 1.0

    @classmethod
    def from_params(cls, params: dict) -> InnerConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def validate(self) -> None:
        for name in ("rep_layer_num", "probe_train_num", "repair_sample_num", "neurons", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.probe_train_num < 10:
            raise ValueError("probe_train_num must be at least 10")
        if not self.learning_rate > 0 or not self.probe_c > 0:
            raise ValueError("learning_rate and probe_c must be positive")


def probed_layers(model: onnx.ModelProto, rep_layer_num: int) -> list[DenseLayer]:
    inputs = {i.name for i in model.graph.input}
    hidden = [d for d in dense_layers(model) if d.input not in inputs and len(consumers(model, d.input)) == 1]
    if not hidden:
        raise SplitError("the model has no dense (Gemm / MatMul) layer reading a hidden representation, so there "
                         "is no neuron whose outgoing weights INNER could optimise")
    return hidden[-rep_layer_num:]


def unadaptable_reason(model: onnx.ModelProto, rep_layer_num: int) -> str | None:
    try:
        probed_layers(model, rep_layer_num)
    except SplitError as exc:
        return str(exc)
    return None


@dataclass
class Neuron:
    layer: DenseLayer
    index: int
    score: float


@dataclass
class InnerResult:
    model: bytes | None
    ranking: list[Neuron]  # every probed neuron, best first
    chosen: list[Neuron]
    probe_accuracy: dict[str, float]
    metrics: dict[str, float]


def _stratified(rng: np.random.Generator, y: np.ndarray, n: int) -> np.ndarray:
    if n >= len(y):
        return np.arange(len(y))
    return np.sort(rng.choice(len(y), n, replace=False))


def score_neurons(layers: list[DenseLayer], acts: dict[str, np.ndarray], predicted: np.ndarray, y: np.ndarray,
                  probe_idx: np.ndarray, failing: np.ndarray, config: InnerConfig, seed: int
                  ) -> tuple[list[Neuron], dict[str, float]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    ranking, probe_acc = [], {}
    for layer in layers:
        a = acts[layer.input].reshape(len(y), -1)
        scaler = StandardScaler().fit(a[probe_idx])
        z = scaler.transform(a)
        target = predicted[probe_idx]
        classes = np.unique(target)
        if len(classes) < 2:
            raise ValueError("the probe inputs all get one prediction; no probe can be trained")
        probe = LogisticRegression(C=config.probe_c, max_iter=500, random_state=seed).fit(z[probe_idx], target)
        probe_acc[layer.input] = float(probe.score(z[probe_idx], target))
        coef = np.zeros((int(max(predicted.max(), y.max())) + 1, z.shape[1]))
        if len(probe.classes_) == 2:  # binary probes keep one row: class 1 vs class 0
            coef[probe.classes_[1]] = probe.coef_[0] / 2
            coef[probe.classes_[0]] = -probe.coef_[0] / 2
        else:
            coef[probe.classes_] = probe.coef_
        zf = z[failing]
        share = zf * (coef[predicted[failing]] - coef[y[failing]])
        scores = share.mean(axis=0)
        ranking += [Neuron(layer, int(i), float(scores[i])) for i in range(len(scores))]
    ranking.sort(key=lambda n: -n.score)
    return ranking, probe_acc


def repair(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray, config: InnerConfig, seed: int,
           should_stop: Callable[[], bool] = lambda: False,
           progress: Callable[[float, str, dict], None] = lambda f, s, m: None) -> InnerResult:
    import torch

    from fixbench.sdk.torch_helpers import classification_loss, outputs_are_probabilities

    config.validate()
    layers = probed_layers(model, config.rep_layer_num)
    rng = np.random.default_rng(seed)
    acts = activations(model, [layer.input for layer in layers], x)
    scores = acts["__output__"]
    predicted = scores.argmax(axis=1)
    wrong = predicted != y
    failing = np.flatnonzero(wrong)
    if not len(failing):
        raise ValueError("no repair input is misclassified; nothing to repair")
    probe_idx = _stratified(rng, y, config.probe_train_num)
    progress(0.05, "probes", {"probe_inputs": float(len(probe_idx)), "layers": float(len(layers))})
    ranking, probe_acc = score_neurons(layers, acts, predicted, y, probe_idx, failing, config, seed)
    chosen = [n for n in ranking[: config.neurons] if n.score > 0] or ranking[:1]
    progress(0.2, "neuron routing", {"fault_neurons": float(len(chosen))})

    # Repair samples: every failing input, then passing ones drawn at random.
    passing = np.flatnonzero(~wrong)
    room = max(config.repair_sample_num - len(failing), 0)
    take = np.sort(rng.choice(passing, min(room, len(passing)), replace=False)) if room else np.array([], int)
    sample = np.concatenate([failing[: config.repair_sample_num], take]).astype(int)

    # The tail starts at the earliest probed representation that holds a fault neuron.
    order = [layer.input for layer in layers]
    start = min(order.index(n.layer.input) for n in chosen)
    tuned = layers[start:]
    tail = Tail(model, layers[start].input, tuple(layer.weight for layer in tuned))
    module = torch_tail(tail)
    weights = [torch.tensor(tail.values[layer.weight], requires_grad=True) for layer in tuned]
    masks = [torch.zeros_like(w) for w in weights]
    for n in chosen:
        k = order.index(n.layer.input) - start
        if n.layer.input_axis() == 1:
            masks[k][:, n.index] = 1.0
        else:
            masks[k][n.index, :] = 1.0
    h = torch.from_numpy(np.ascontiguousarray(acts[layers[start].input][sample]))
    target = torch.from_numpy(y[sample].astype(np.int64))
    loss_fn = classification_loss(outputs_are_probabilities(scores[:64]))
    optimiser = torch.optim.Adam(weights, lr=config.learning_rate)

    def correct() -> np.ndarray:
        with torch.no_grad():
            return (module(h, *weights).argmax(dim=1) == target).numpy()

    base = correct()
    best = {"count": int(base.sum()), "epoch": 0, "values": None, "ok": base}
    torch.manual_seed(seed)
    for epoch in range(1, config.epochs + 1):
        if should_stop():
            break
        optimiser.zero_grad()
        loss = loss_fn(module(h, *weights), target)
        loss.backward()
        for w, m in zip(weights, masks, strict=True):
            w.grad *= m  # only the fault neurons' outgoing weights move
        optimiser.step()
        ok = correct()
        if int(ok.sum()) > best["count"]:
            best = {"count": int(ok.sum()), "epoch": epoch, "ok": ok,
                    "values": {layer.weight: w.detach().numpy().copy() for layer, w in zip(tuned, weights, strict=True)}}
        progress(0.2 + 0.8 * epoch / config.epochs, "optimise fault neurons",
                 {"loss": float(loss.detach()), "correct": float(ok.sum())})

    n_fail = int(min(len(failing), config.repair_sample_num))
    metrics = {
        "failing": float(len(failing)), "repair_samples": float(len(sample)), "fault_neurons": float(len(chosen)),
        "best_epoch": float(best["epoch"]),
        "fixed": float(best["ok"][:n_fail].sum()),
        "broken": float((base[n_fail:] & ~best["ok"][n_fail:]).sum()),
        **{f"probe_accuracy[{name}]": acc for name, acc in probe_acc.items()},
    }
    repaired = with_initializers(model, best["values"]) if best["values"] is not None else None
    return InnerResult(repaired, ranking, chosen, probe_acc, metrics)
