"""care-keras: CARE (Sun, Sun, Pham, Shi; ICSE 2022) on Keras / TensorFlow, as the original tool
runs it, in the TensorFlow image: the job's ONNX model goes into Keras through the SDK's bridge
(fixbench.sdk.keras_bridge, parity-gated) and the repaired Keras model comes back to ONNX the
same way."""

import os
import sys

from fixbench.sdk import Approach, Diagnosis, LocalisedNeuron, Outcome, Param, Unadaptable, serve
from fixbench.sdk.keras_bridge import keras_to_onnx, onnx_to_keras

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

# TensorFlow, Keras and pyswarms load at service start, not inside the first job's repair time.
import keras  # noqa: E402,F401
import pyswarms  # noqa: E402,F401
from care_keras import CareConfig, KerasSplit, SplitError, repair  # noqa: E402

# The published settings (the tool's causal_inference.py and the paper); the default preset
# only caps the passing repair inputs in the PSO fitness, as services/care does.
PRESETS = {
    "paper": dict(layer=1, neurons=5, steps=4, particles=20, c1=0.41, c2=0.41, w=0.8, bound=10.0,
                  iterations=100, ftol=1e-3, ftol_iter=10, alpha=0.1, max_passing=0),
}
PRESETS["default"] = {**PRESETS["paper"], "max_passing": 2000}
_D = PRESETS["default"]


def resolve(ctx) -> dict:
    given = set(ctx.job.params.keys()) if ctx.job.HasField("params") else set()
    values = dict(PRESETS[ctx.params["preset"]])
    values.update({k: ctx.params[k] for k in given if k != "preset"})
    return values


def _hidden_dense_reason(model) -> str | None:
    """Cheap ONNX-side check (no TensorFlow): CARE needs a dense layer after a hidden one."""
    dense = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    weighted = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul", "Conv")]
    if not dense or len(weighted) < 2:
        return "the model has no dense (Gemm / MatMul) layer after a hidden layer to split at"
    return None


class CareKeras(Approach):
    name = "care-keras"
    version = "1.0.0"
    level = "neuron"
    paper = ("B. Sun, J. Sun, L. H. Pham, J. Shi. Causality-Based Neural Network Repair. ICSE 2022, "
             "pp. 338-349. doi:10.1145/3510003.3510080")
    summary = ("CARE on a Keras model in the TensorFlow image: causal effect of each hidden neuron by interventions, "
               "particle-swarm scaling of the top neurons; ONNX <-> Keras through the parity-gated bridge.")
    needs = ("repair_data",)
    fault_families = ("misclassification",)
    uses_torch = False
    params = (
        Param("preset", str, "default", "'default' or 'paper': fills the other parameters' defaults"),
        Param("layer", int, _D["layer"], "split before the n-th Dense layer from the end (1 = the last)"),
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
        reason = _hidden_dense_reason(ctx.model)
        if reason:
            return reason
        # The Keras graph decides whether CARE's tail can be split off: convert (a small model
        # takes about a second) and replay the tail on a few repair inputs.
        x = ctx.split("repair").x[:32]
        try:
            KerasSplit(onnx_to_keras(ctx.model_bytes, check_x=x), int(resolve(ctx)["layer"])).verify(x)
        except (SplitError, Unadaptable) as exc:
            return str(exc)
        return None

    def repair(self, ctx):
        config = CareConfig.from_params(resolve(ctx))
        split = ctx.split("repair")
        gate = ctx.split("valid") if ctx.has_split("valid") else split
        ctx.progress(0.0, "convert", "ONNX -> Keras (parity-gated on the validation split)")
        model = onnx_to_keras(ctx.model_bytes, check_x=gate.x)

        def report(fraction, stage, metrics):
            if not ctx.should_stop():
                ctx.progress(0.05 + 0.9 * fraction, stage, "", **metrics)

        try:
            result = repair(model, split.x, split.y, config, ctx.seed, ctx.should_stop, report)
        except SplitError as exc:
            raise Unadaptable(str(exc)) from exc
        m = {**result.metrics, "import_parity_max_diff": model.fixbench_parity.max_diff}
        factors = ", ".join(f"{i}: {r:.3f}" for i, r in zip(result.chosen, result.factors, strict=True))
        summary = (f"split before Keras layer {result.layer}; top {len(result.chosen)} neurons by causal effect scaled "
                   f"by {{{factors}}}; fixed {int(m['fixed'])} of {int(m['failing'])} failing repair inputs, broke "
                   f"{int(m['broken'])} of {int(m['passing'])} passing")
        ctx.log(summary)
        onnx_bytes = None
        if result.model is not None:
            ctx.progress(0.96, "convert", "Keras -> ONNX (parity-gated)")
            onnx_bytes = keras_to_onnx(result.model, check_x=gate.x)
        return Outcome(
            model=onnx_bytes,
            diagnosis=Diagnosis(
                neurons=[LocalisedNeuron(result.layer, i, s) for i, s in result.ranking[: len(result.chosen)]],
                layers=[result.layer], summary=summary),
            message=summary if onnx_bytes is not None else "no scaling beat the original cost; model unchanged",
            metrics=m,
            not_repaired=onnx_bytes is None,
        )


if __name__ == "__main__":
    serve(CareKeras)
