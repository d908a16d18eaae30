"""arachne: search-based repair of the last dense layer(s) (Sohn, Kang & Yoo, TOSEM 2023).

Works on the ONNX initializers with numpy + onnxruntime only (no torch in this image)."""

import os
import sys

from fixbench.sdk import Approach, Diagnosis, LocalisedWeight, Outcome, Param, Unadaptable, serve

# Run as a script (`python services/arachne/approach.py`) this folder is on sys.path already;
# imported from elsewhere (tests, the local runtime) it may not be.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from arachne_repair import (  # noqa: E402
    ArachneConfig,
    UnsupportedModelError,
    find_dense_tail,
    repair,
    unadaptable_reason,
)

_DEFAULTS = ArachneConfig()


class Arachne(Approach):
    name = "arachne"
    version = "1.0.0"
    level = "neuron"
    paper = (
        "J. Sohn, S. Kang, S. Yoo. Arachne: Search-Based Repair of Deep Neural Networks. "
        "ACM TOSEM 32(4), article 85, 2023. doi:10.1145/3563210"
    )
    summary = (
        "Localises last-layer weights by gradient loss and forward impact (Pareto front, failing vs "
        "passing inputs), then optimises them with Differential Evolution; numpy + onnxruntime, no training."
    )
    needs = ("repair_data",)
    fault_families = ("misclassification",)
    uses_torch = False

    @classmethod
    def validate_params(cls, params):
        ArachneConfig.from_params(params).validate()
    params = (
        Param(
            "layers",
            int,
            _DEFAULTS.layers,
            "how many trailing dense layers to localise in (1 = the last, as the tool's default)",
        ),
        Param(
            "max_weights",
            int,
            _DEFAULTS.max_weights,
            "cap on localised weights (the paper keeps the whole Pareto front)",
        ),
        Param("pop_size", int, _DEFAULTS.pop_size, "DE population size"),
        Param(
            "mutation_min", float, _DEFAULTS.mutation_min, "lower end of the DE scale factor F, drawn per generation"
        ),
        Param("mutation_max", float, _DEFAULTS.mutation_max, "upper end of the DE scale factor F"),
        Param("crossover", float, _DEFAULTS.crossover, "DE crossover rate CR"),
        Param("generations", int, _DEFAULTS.generations, "most DE generations"),
        Param("patience", int, _DEFAULTS.patience, "generations without a better patch before stopping"),
        Param(
            "max_passing",
            int,
            _DEFAULTS.max_passing,
            "passing repair inputs used by the search (sampled per label; 0 = all)",
        ),
        Param(
            "forbid_broken_passing",
            bool,
            _DEFAULTS.forbid_broken_passing,
            "reject patches that make any passing input fail",
        ),
        Param(
            "fitness",
            str,
            _DEFAULTS.fitness,
            "'paper' (N+1)/(L+1) terms, or 'artifact' (the public tool's per-input form)",
        ),
        Param(
            "alpha", float, _DEFAULTS.alpha, "weight of the failing inputs' term in the fitness (the tool's patch_aggr)"
        ),
        Param(
            "init",
            str,
            _DEFAULTS.init,
            "initial population: 'layer' N(layer mean, layer std) as the tool, or 'current' N(weight, layer std)",
        ),
    )

    def check(self, ctx) -> str | None:
        return unadaptable_reason(ctx.model, int(ctx.params["layers"]))

    def repair(self, ctx) -> Outcome:
        split = ctx.split("repair")
        threads = int(os.environ.get("FIXBENCH_THREADS", "0") or 0)
        config = ArachneConfig.from_params({**ctx.params, "threads": threads})
        try:
            tail = find_dense_tail(ctx.model, config.layers)
        except UnsupportedModelError as exc:
            raise Unadaptable(str(exc)) from exc
        ctx.log(
            f"dense tail: {', '.join(layer.weight for layer in tail.layers)} (then {' + '.join(tail.output_ops) or 'logits'}); "
            f"{len(split)} repair inputs"
        )

        def report(fraction: float, stage: str, metrics: dict) -> None:
            # Past the deadline the search returns its best patch; reporting then would raise.
            if not ctx.should_stop():
                ctx.progress(fraction, stage, "", **metrics)

        try:
            result = repair(
                ctx.model, split.x, split.y, config, seed=ctx.seed, should_stop=ctx.should_stop, progress=report
            )
        except UnsupportedModelError as exc:  # found only on data, e.g. the numpy tail disagrees with onnxruntime
            raise Unadaptable(str(exc)) from exc
        m = result.metrics
        summary = (
            f"{len(result.localised)} weights localised in {', '.join(layer.weight for layer in tail.layers)}; "
            f"DE fixed {int(m.get('fixed', 0))} of {int(m['failing'])} failing repair inputs and broke "
            f"{int(m.get('broken', 0))} of {int(m['passing'])} passing ones"
        )
        ctx.log(summary)
        return Outcome(
            model=result.model,
            diagnosis=Diagnosis(
                weights=[LocalisedWeight(w.tensor, list(w.index), w.score) for w in result.localised],
                layers=[layer.weight for layer in tail.layers],
                summary=summary,
            ),
            message=summary if result.patched else "no patch beat the original model's fitness; model unchanged",
            metrics=m,
            not_repaired=not result.patched,
        )


if __name__ == "__main__":
    serve(Arachne)
