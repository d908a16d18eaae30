"""neurecover: regression-controlled repair with the training history (NeuRecover; Tokui et al.,
SANER 2022), after the eAI-Repair-Toolkit implementation: weights changed by the last epoch
and tied to the regressions are localised, then searched by PSO with a regression penalty."""

import os
import sys

import onnx

from fixbench.sdk import Approach, Diagnosis, LocalisedWeight, Outcome, Param, Unadaptable, serve
from fixbench.sdk.onnx_split import SplitError, preload_torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import pyswarms  # noqa: E402,F401  (loaded at start too)
from neurecover_repair import NeuRecoverConfig, NoHistoryError, repair, unadaptable_reason  # noqa: E402

# Heavy imports at service start, not inside the first job's repair time.
preload_torch()

# paper: the toolkit's settings (Arachne's PSO: 100 particles x 100 iterations, phi 4.1, stop
# after 10 idle iterations, 200 passing inputs; NeuRecover's alpha 1.0 and reduction rate 1.0;
# every localised weight searched). default: the same search on at most 100 localised weights
# (largest last-epoch change first) with 30 particles, so that a job on the quick MNIST fault
# takes about a minute on 2 cores.
PRESETS = {
    "paper": dict(alpha=1.0, particles=100, iterations=100, patience=10, positive_samples=200, phi=4.1,
                  reduction_rate=1.0, max_weights=0, fallback_failing=True),
}
PRESETS["default"] = {**PRESETS["paper"], "particles": 30, "max_weights": 100}
_D = PRESETS["default"]


def resolve(ctx) -> dict:
    """The preset's values, overridden by the parameters the job gives explicitly."""
    given = set(ctx.job.params.keys()) if ctx.job.HasField("params") else set()
    values = dict(PRESETS[ctx.params["preset"]])
    values.update({k: ctx.params[k] for k in given if k != "preset"})
    return values


class NeuRecover(Approach):
    name = "neurecover"
    version = "1.0.0"
    level = "neuron"
    paper = ("S. Tokui, S. Tokumoto, A. Yoshii, F. Ishikawa, T. Nakagawa, K. Munakata, S. Kikuchi. NeuRecover: "
             "Regression-Controlled Repair of Deep Neural Networks with Training History. SANER 2022, pp. 1111-1121. "
             "doi:10.1109/SANER53432.2022.00128")
    summary = ("Compares the faulty model with its previous-epoch checkpoint: weights that the last epoch changed and "
               "that drive the regressed inputs are localised, then optimised by particle swarm with a regression penalty.")
    needs = ("repair_data",)
    fault_families = ("misclassification",)
    params = (
        Param("preset", str, "default", "'default' or 'paper': fills the other parameters' defaults"),
        Param("alpha", float, _D["alpha"], "weight of the passing inputs' term (the regression penalty)"),
        Param("particles", int, _D["particles"], "PSO particles"),
        Param("iterations", int, _D["iterations"], "most PSO iterations"),
        Param("patience", int, _D["patience"], "iterations without a better patch before stopping"),
        Param("positive_samples", int, _D["positive_samples"], "passing repair inputs sampled for the fitness"),
        Param("phi", float, _D["phi"], "PSO constriction parameter (c1 = c2 = chi * phi / 2, w = chi)"),
        Param("reduction_rate", float, _D["reduction_rate"], "scales how many weights per layer are considered"),
        Param("max_weights", int, _D["max_weights"], "cap on localised weights, largest last-epoch change first (0 = none)"),
        Param("fallback_failing", bool, _D["fallback_failing"],
              "without regressed inputs, localise on every failing input instead of giving up"),
    )

    @classmethod
    def validate_params(cls, params):
        if params["preset"] not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, not {params['preset']!r}")
        NeuRecoverConfig.from_params(params).validate()

    def check(self, ctx):
        return unadaptable_reason(ctx.model, len(ctx.job.history))

    def repair(self, ctx):
        config = NeuRecoverConfig.from_params(resolve(ctx))
        split = ctx.split("repair")
        try:
            history = [(epoch, onnx.load_from_string(data)) for epoch, data in ctx.history()]
        except Exception as exc:  # a checkpoint that is no ONNX model is bad input, not a crash
            raise Unadaptable(f"the training history holds a checkpoint that is not a valid ONNX model: {exc}") from exc
        ctx.log(f"training history: epochs {[e for e, _ in history]}; {len(split)} repair inputs")

        def report(fraction, stage, metrics):
            if not ctx.should_stop():
                ctx.progress(fraction, stage, "", **metrics)

        try:
            result = repair(ctx.model, history, split.x, split.y, config, ctx.seed, ctx.should_stop, report)
        except (SplitError, NoHistoryError) as exc:
            raise Unadaptable(str(exc)) from exc
        except ValueError as exc:
            if "history checkpoint" in str(exc):
                raise Unadaptable(str(exc)) from exc
            raise
        m = result.metrics
        layers = sorted({w.layer.weight for w in result.localised})
        summary = (f"{int(m.get('regressed', 0))} regressed / {int(m.get('improved', 0))} improved repair inputs since "
                   f"the previous epoch; {len(result.localised)} weights localised in {', '.join(layers) or 'no layer'}")
        if result.localised:
            summary += (f"; PSO fixed {int(m['patched'])} of {int(m['failing'])} failing repair inputs and broke "
                        f"{int(m['broken'])} of {int(m['passing_sampled'])} sampled passing ones")
        ctx.log(summary)
        return Outcome(
            model=result.model,
            diagnosis=Diagnosis(
                weights=[LocalisedWeight(w.layer.weight, list(w.index), w.score) for w in result.localised],
                layers=layers,
                summary=summary,
            ),
            message=summary if result.model is not None else f"{summary}; no patch beat the original; model unchanged",
            metrics=m,
            not_repaired=result.model is None,
        )


if __name__ == "__main__":
    serve(NeuRecover)
