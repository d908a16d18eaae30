"""care: causality-based neuron repair (Sun, Sun, Pham, Shi; ICSE 2022), on ONNX with numpy,
onnxruntime and pyswarms (no torch in this image)."""

import os
import sys

from fixbench.sdk import Approach, Diagnosis, LocalisedNeuron, Outcome, Param, Unadaptable, serve
from fixbench.sdk.onnx_split import SplitError

# Run as a script this folder is on sys.path already; imported from elsewhere it may not be.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

# pyswarms (and its matplotlib) load at service start, not inside the first job's repair time.
import pyswarms  # noqa: E402,F401
from care_repair import CareConfig, repair, unadaptable_reason  # noqa: E402

# The published settings (the tool's causal_inference.py and the paper). They are already
# cheap on the quick MNIST fault (seconds), so the default preset keeps them; it only caps
# the passing repair inputs in the PSO fitness, which the paper draws in batches.
PRESETS = {
    "paper": dict(layer=1, neurons=5, steps=4, particles=20, c1=0.41, c2=0.41, w=0.8, bound=10.0,
                  iterations=100, ftol=1e-3, ftol_iter=10, alpha=0.1, max_passing=0),
}
PRESETS["default"] = {**PRESETS["paper"], "max_passing": 2000}
_D = PRESETS["default"]


def resolve(ctx) -> dict:
    """The preset's values, overridden by the parameters the job gives explicitly."""
    given = set(ctx.job.params.keys()) if ctx.job.HasField("params") else set()
    values = dict(PRESETS[ctx.params["preset"]])
    values.update({k: ctx.params[k] for k in given if k != "preset"})
    return values


class Care(Approach):
    name = "care"
    version = "1.0.0"
    level = "neuron"
    paper = ("B. Sun, J. Sun, L. H. Pham, J. Shi. Causality-Based Neural Network Repair. ICSE 2022, "
             "pp. 338-349. doi:10.1145/3510003.3510080")
    summary = ("Scores each hidden neuron at a split layer by its causal effect on the correct-label probability "
               "(interventions do(h_i = v)), then finds scaling factors for the top neurons by particle-swarm "
               "optimisation; numpy + onnxruntime + pyswarms.")
    needs = ("repair_data",)
    fault_families = ("misclassification",)
    uses_torch = False
    params = (
        Param("preset", str, "default", "'default' or 'paper': fills the other parameters' defaults"),
        Param("layer", int, _D["layer"], "split before the n-th dense layer from the end (1 = the last)"),
        Param("neurons", int, _D["neurons"], "neurons repaired (top causal effect)"),
        Param("steps", int, _D["steps"], "intervention values per neuron"),
        Param("particles", int, _D["particles"], "PSO particles"),
        Param("c1", float, _D["c1"], "PSO cognitive coefficient"),
        Param("c2", float, _D["c2"], "PSO social coefficient"),
        Param("w", float, _D["w"], "PSO inertia"),
        Param("bound", float, _D["bound"], "factors are searched in [-bound, bound]"),
        Param("iterations", int, _D["iterations"], "most PSO iterations"),
        Param("ftol", float, _D["ftol"], "PSO stops when the best cost improves less than this ..."),
        Param("ftol_iter", int, _D["ftol_iter"], "... over this many iterations"),
        Param("alpha", float, _D["alpha"], "weight of the accuracy term in the cost (1 - alpha: failing inputs)"),
        Param("max_passing", int, _D["max_passing"], "passing repair inputs in the fitness (0 = all)"),
    )

    @classmethod
    def validate_params(cls, params):
        if params["preset"] not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, not {params['preset']!r}")
        CareConfig.from_params(params).validate()

    def check(self, ctx):
        return unadaptable_reason(ctx.model, int(resolve(ctx)["layer"]))

    def repair(self, ctx):
        config = CareConfig.from_params(resolve(ctx))
        split = ctx.split("repair")

        def report(fraction, stage, metrics):
            if not ctx.should_stop():  # past the deadline the search returns its best; reporting would raise
                ctx.progress(fraction, stage, "", **metrics)

        try:
            result = repair(ctx.model, split.x, split.y, config, ctx.seed, ctx.should_stop, report)
        except SplitError as exc:
            raise Unadaptable(str(exc)) from exc
        m = result.metrics
        factors = ", ".join(f"{i}: {r:.3f}" for i, r in zip(result.chosen, result.factors, strict=True))
        summary = (f"split before {result.layer.node} (input {result.layer.input}); top {len(result.chosen)} neurons by "
                   f"causal effect scaled by {{{factors}}}; fixed {int(m['fixed'])} of {int(m['failing'])} failing repair "
                   f"inputs, broke {int(m['broken'])} of {int(m['passing'])} passing")
        ctx.log(summary)
        return Outcome(
            model=result.model,
            diagnosis=Diagnosis(
                neurons=[LocalisedNeuron(result.layer.input, i, s) for i, s in result.ranking[: len(result.chosen)]],
                layers=[result.layer.weight],
                summary=summary,
            ),
            message=summary if result.model is not None else "no scaling beat the original cost; model unchanged",
            metrics=m,
            not_repaired=result.model is None,
        )


if __name__ == "__main__":
    serve(Care)
