"""vere: VeRe, verification-guided neuron ranking and repair (Ma et al., ICSE 2024), with the
CROWN bounds computed in numpy (vere_core) rather than by auto_LiRPA."""

import os
import sys

import numpy as np

from fixbench.sdk import (
    Approach,
    Diagnosis,
    LocalisedNeuron,
    LocalisedWeight,
    Outcome,
    Param,
    ParamError,
    Unadaptable,
    plnet,
    serve,
)

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import vere_core as vc  # noqa: E402

# default: three neurons, a 10-interval grid and short mini-network training (one quick MNIST
# job in seconds on 2 cores). paper: the original tool's CIFAR-10 VGG backdoor setting as far
# as its code shows it (up to 128 misclassified inputs, ten correct ones kept per misclassified
# one, Adam lr 0.01 for the in-weights; the number of rounds and local epochs are command-line
# arguments of the tool, set here to the larger values of its scripts).
PRESETS = {
    "default": dict(check_layer=0, rounds=3, intervals=10, spread=0.5, local_epochs=30, learning_rate=0.01,
                    batch_size=64, ratio=10, max_failing=128, patience=2),
    "paper": dict(check_layer=0, rounds=20, intervals=20, spread=0.5, local_epochs=100, learning_rate=0.01,
                  batch_size=64, ratio=10, max_failing=128, patience=5),
}
_D = PRESETS["default"]


class VeRe(Approach):
    name = "vere"
    version = "1.0.0"
    level = "neuron"
    paper = ("Ma, Yang, Wang, Sun, Huang, Wang. VeRe: Verification Guided Synthesis for Repairing Deep Neural "
             "Networks. ICSE 2024. Original tool: nninjn/VeRe")
    summary = ("Ranks the neurons of a hidden dense layer by how far CROWN linear-relaxation bounds say moving each "
               "one can lift the misclassified inputs' margins, then retrains the top neuron's in-weights towards "
               "provably fixing value intervals, neuron by neuron.")
    needs = ("repair_data",)
    fault_families = ("misclassification",)
    uses_torch = False
    params = (
        Param("preset", str, "default", "default or paper: fills the other parameters' defaults"),
        Param("check_layer", int, _D["check_layer"], "which hidden dense ReLU layer is analysed (index among them)"),
        Param("rounds", int, _D["rounds"], "neurons repaired one after another (the tool's layer_round)"),
        Param("intervals", int, _D["intervals"], "intervals of each neuron's value grid (the tool's --interval)"),
        Param("spread", float, _D["spread"], "grid reaches this fraction of the observed range beyond min and max"),
        Param("local_epochs", int, _D["local_epochs"], "mini-network training epochs (the tool's --localepoch)"),
        Param("learning_rate", float, _D["learning_rate"], "Adam learning rate of the mini-network"),
        Param("batch_size", int, _D["batch_size"], "mini-network batch size"),
        Param("ratio", int, _D["ratio"], "correctly classified inputs kept per misclassified one"),
        Param("max_failing", int, _D["max_failing"], "most misclassified repair inputs analysed per round"),
        Param("patience", int, _D["patience"], "rounds without a better repair accuracy before stopping"),
    )

    @classmethod
    def resolve_params(cls, given):
        preset = given.get("preset", "default")
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ParamError(f"preset must be one of {sorted(PRESETS)}, not {preset!r}")
        return super().resolve_params({**PRESETS[preset], **given})

    @classmethod
    def validate_params(cls, params):
        positive = ("rounds", "intervals", "local_epochs", "batch_size", "max_failing", "patience")
        bad = [k for k in positive if params[k] < 1]
        if bad or params["ratio"] < 0 or params["learning_rate"] <= 0 or params["spread"] < 0:
            raise ParamError(f"{', '.join(bad) or 'ratio / learning_rate / spread'} out of range "
                             f"(counts >= 1, ratio >= 0, learning_rate > 0, spread >= 0)")

    def check(self, ctx):
        return unadaptable_reason(ctx.model, int(ctx.params["check_layer"]))

    def repair(self, ctx):
        p = ctx.params
        reason = unadaptable_reason(ctx.model, int(p["check_layer"]))
        if reason:
            raise Unadaptable(reason)
        tail = plnet.dense_tail(ctx.model)
        split = ctx.split("repair")
        try:
            a0 = plnet.tail_features(ctx.model, tail, split.x)
        except plnet.UnsupportedNetwork as exc:
            raise Unadaptable(str(exc)) from exc
        y = split.y.astype(np.int64)
        layers = [vc.Layer(layer.w, layer.b, layer.relu) for layer in tail.layers]
        cfg = vc.Config(**{k: p[k] for k in vc.Config.__dataclass_fields__})
        j = vc.hidden_layers(layers)[cfg.check_layer]
        ctx.log(f"analysing the {layers[j].w.shape[1]} neurons after {tail.layers[j].weight}; "
                f"CROWN bounds over {len(layers) - j - 1} following dense layer(s)")

        def report(fraction, stage):
            if not ctx.should_stop():
                ctx.progress(min(1.0, fraction), stage)

        result = vc.repair(layers, a0, y, cfg, ctx.rng, ctx.should_stop, report)
        accepted = [r for r in result.rounds if r.accepted]
        ranking = result.first_ranking
        top = [] if ranking is None else [int(i) for i in ranking.order[:10]]
        neurons = [vc_neuron(tail.layers[j].weight, n, float(ranking.scores[n])) for n in top] if ranking else []
        rounds = "; ".join(f"neuron {r.neuron} (score {r.score:.3g}) -> repair acc {r.accuracy:.4f}"
                           f"{'' if r.accepted else ' (rejected)'}" for r in result.rounds)
        if not accepted:
            return Outcome(model=None, not_repaired=True,
                           diagnosis=Diagnosis(neurons=neurons, layers=[tail.layers[j].weight],
                                               summary=f"ranked {len(top)} neurons; no patch raised repair accuracy"),
                           message=f"no neuron patch raised the repair split's accuracy ({rounds or 'no round ran'})",
                           metrics={"rounds": float(len(result.rounds))})
        weights = {j: (result.layers[j].w, result.layers[j].b), j + 1: (result.layers[j + 1].w, result.layers[j + 1].b)}
        repaired = plnet.with_tail_weights(ctx.model, tail, weights)
        changes = plnet.changed_weights(tail, weights)
        summary = (f"VeRe repaired {len(accepted)} neuron(s) {[r.neuron for r in accepted]} after "
                   f"{tail.layers[j].weight}: repair accuracy {result.start_accuracy:.4f} -> {result.accuracy:.4f} ({rounds})")
        ctx.log(summary)
        patched = [vc_neuron(tail.layers[j].weight, r.neuron, r.score) for r in accepted]
        return Outcome(
            model=repaired,
            diagnosis=Diagnosis(neurons=patched + [n for n in neurons if n.index not in {r.neuron for r in accepted}],
                                weights=[LocalisedWeight(t, list(i), s) for t, i, s in changes],
                                layers=[tail.layers[j].weight, tail.layers[j + 1].weight], summary=summary),
            message=summary,
            metrics={"rounds": float(len(result.rounds)), "patched": float(len(accepted)),
                     "repair_acc_before": result.start_accuracy, "repair_acc_after": result.accuracy},
        )


def vc_neuron(layer: str, index: int, score: float) -> LocalisedNeuron:
    return LocalisedNeuron(layer=layer, index=int(index), score=float(score))


def unadaptable_reason(model, check_layer: int) -> str | None:
    """VeRe analyses the neurons of a hidden fully-connected ReLU layer: it bounds the
    sub-network after that layer with CROWN (Linear / ReLU) and retrains a neuron's in-weights
    from the layer before. A network whose dense tail has no such hidden layer (global pooling
    straight into the class layer, as in ResNet / DenseNet heads) has nothing to analyse."""
    try:
        tail = plnet.dense_tail(model)
    except plnet.UnsupportedNetwork as exc:
        return f"VeRe analyses a hidden fully-connected ReLU layer before the output: {exc}"
    hidden = vc.hidden_layers([vc.Layer(layer.w, layer.b, layer.relu) for layer in tail.layers])
    if not hidden:
        return ("VeRe analyses the neurons of a hidden fully-connected ReLU layer followed by the rest of the "
                f"network, which it bounds with CROWN; this model's dense tail is a single "
                f"{tail.layers[-1].w.shape[0]}->{tail.layers[-1].w.shape[1]} class layer with no hidden dense layer")
    if not -len(hidden) <= check_layer < len(hidden):
        return f"check_layer={check_layer}: the dense tail has {len(hidden)} hidden ReLU layer(s)"
    return None


if __name__ == "__main__":
    serve(VeRe)
