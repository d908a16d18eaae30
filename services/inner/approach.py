"""inner: interpretability-based neuron repair (INNER; Chen, Zhou, Sun, Wang, Xuan, Yang; ISSTA 2024):
linear probes score each hidden neuron's share in the misclassifications, then the fault
neurons' outgoing weights are optimised; torch on the ONNX tail, scikit-learn probes."""

import os
import sys

from fixbench.sdk import Approach, Diagnosis, LocalisedNeuron, Outcome, Param, Unadaptable, serve
from fixbench.sdk.onnx_split import SplitError, preload_torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import sklearn.linear_model  # noqa: E402,F401  (the probes' library, loaded at start too)
from inner_repair import InnerConfig, repair, unadaptable_reason  # noqa: E402

# Heavy imports at service start, not inside the first job's repair time.
preload_torch()

# paper: the three settings the study's catalogue gives (probe_train_num, rep_layer_num,
# repair_sample_num); the others are ours (see README). The default preset is the same: one
# job on the quick MNIST fault takes about a second.
PRESETS = {
    "paper": dict(rep_layer_num=3, probe_train_num=1000, repair_sample_num=1000, neurons=10, epochs=30,
                  learning_rate=1e-2, probe_c=1.0),
}
PRESETS["default"] = dict(PRESETS["paper"])
_D = PRESETS["default"]


def resolve(ctx) -> dict:
    """The preset's values, overridden by the parameters the job gives explicitly."""
    given = set(ctx.job.params.keys()) if ctx.job.HasField("params") else set()
    values = dict(PRESETS[ctx.params["preset"]])
    values.update({k: ctx.params[k] for k in given if k != "preset"})
    return values


class Inner(Approach):
    name = "inner"
    version = "1.0.0"
    level = "neuron"
    paper = ("Z. Chen, J. Zhou, Y. Sun, J. Wang, Q. Xuan, X. Yang. Interpretability Based Neural Network Repair. "
             "ISSTA 2024, pp. 908-919. doi:10.1145/3650212.3680330")
    summary = ("Trains a linear probe per hidden representation, scores each neuron's share in routing the failing "
               "inputs to their wrong class, and optimises the top neurons' outgoing weights on repair inputs.")
    needs = ("repair_data",)
    fault_families = ("misclassification",)
    params = (
        Param("preset", str, "default", "'default' or 'paper': fills the other parameters' defaults"),
        Param("rep_layer_num", int, _D["rep_layer_num"], "hidden representations probed (inputs of the last n dense layers)"),
        Param("probe_train_num", int, _D["probe_train_num"], "repair inputs the probes are trained on"),
        Param("repair_sample_num", int, _D["repair_sample_num"], "repair inputs the optimisation uses (failing first)"),
        Param("neurons", int, _D["neurons"], "fault neurons optimised (top scores over all probed layers)"),
        Param("epochs", int, _D["epochs"], "full-batch Adam steps on the fault neurons"),
        Param("learning_rate", float, _D["learning_rate"], "Adam learning rate"),
        Param("probe_c", float, _D["probe_c"], "inverse L2 strength of the logistic-regression probes"),
    )

    @classmethod
    def validate_params(cls, params):
        if params["preset"] not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, not {params['preset']!r}")
        InnerConfig.from_params(params).validate()

    def check(self, ctx):
        return unadaptable_reason(ctx.model, int(resolve(ctx)["rep_layer_num"]))

    def repair(self, ctx):
        config = InnerConfig.from_params(resolve(ctx))
        split = ctx.split("repair")

        def report(fraction, stage, metrics):
            if not ctx.should_stop():
                ctx.progress(fraction, stage, "", **metrics)

        try:
            result = repair(ctx.model, split.x, split.y, config, ctx.seed, ctx.should_stop, report)
        except SplitError as exc:
            raise Unadaptable(str(exc)) from exc
        m = result.metrics
        where = sorted({n.layer.weight for n in result.chosen})
        summary = (f"{len(result.chosen)} fault neurons by probe routing (outgoing weights in {', '.join(where)}); "
                   f"fixed {int(m['fixed'])} of {int(m['failing'])} failing repair inputs, broke {int(m['broken'])} "
                   f"of the {int(m['repair_samples'] - min(m['failing'], m['repair_samples']))} passing ones used")
        ctx.log(summary)
        return Outcome(
            model=result.model,
            diagnosis=Diagnosis(
                neurons=[LocalisedNeuron(n.layer.input, n.index, n.score) for n in result.chosen],
                layers=where,
                summary=summary,
            ),
            message=summary if result.model is not None else "no epoch beat the original on the repair samples; model unchanged",
            metrics=m,
            not_repaired=result.model is None,
        )


if __name__ == "__main__":
    serve(Inner)
