"""threem: 3M-DNN, minimal multi-layer modification (Refaeli & Katz, NSV 2022), with the
single-layer queries solved as LPs by HiGHS (highspy) instead of the Marabou verifier."""

import os
import sys

import numpy as np

from fixbench.sdk import Approach, Diagnosis, LocalisedWeight, Outcome, Param, ParamError, Unadaptable, plnet, serve

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from threem_repair import Config, Layer, NoSolution, ThreeM  # noqa: E402

# default: sized for one quick MNIST job in well under a minute on 2 cores; paper: the
# settings of the 3M-DNN paper's MNIST experiments as far as they are published (two
# modified layers split at the last hidden layer, L∞ objective, the misclassified points
# of the repair set; the paper searches until its timeout, here bounded by steps).
PRESETS = {
    "default": dict(layers=2, search="greedy", steps=6, step_size=0.25, norm="linf", margin=0.05, max_points=32,
                    lp_seconds=30.0),
    "paper": dict(layers=2, search="greedy", steps=40, step_size=0.25, norm="linf", margin=0.05, max_points=0,
                  lp_seconds=600.0),
}
_D = PRESETS["default"]


class ThreeMDNN(Approach):
    name = "threem"
    version = "1.0.0"
    level = "layer"
    paper = ("I. Refaeli, G. Katz. Minimal Multi-Layer Modifications of Deep Neural Networks. NSV 2022 "
             "(arXiv:2110.09929); single-layer step: B. Goldberger, G. Katz, Y. Adi, J. Keshet. Minimal "
             "Modifications of Deep Neural Networks using Verification. LPAR 2020")
    summary = ("Splits the dense tail at separation layers, proposes new separation values for the misclassified "
               "repair inputs and solves one minimal single-layer modification (an LP, HiGHS) per sub-network; "
               "keeps the smallest total change found (anytime search).")
    needs = ("repair_data",)
    fault_families = ("misclassification",)
    uses_torch = False
    params = (
        Param("preset", str, "default", "default or paper: fills the other parameters' defaults"),
        Param("layers", int, _D["layers"], "dense layers modified (1 = the last only, Goldberger's single layer)"),
        Param("search", str, _D["search"], "proposal heuristic over separation values: greedy or random"),
        Param("steps", int, _D["steps"], "proposals tried after the single-layer start"),
        Param("step_size", float, _D["step_size"], "proposal move relative to the separation values' mean size"),
        Param("norm", str, _D["norm"], "size of a change: linf (the paper) or l1"),
        Param("margin", float, _D["margin"], "correct-class logit lead required on every repaired point"),
        Param("max_points", int, _D["max_points"], "misclassified repair inputs repaired (0 = all)"),
        Param("lp_seconds", float, _D["lp_seconds"], "time limit per LP (also capped by the job budget)"),
    )

    @classmethod
    def resolve_params(cls, given):
        preset = given.get("preset", "default")
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ParamError(f"preset must be one of {sorted(PRESETS)}, not {preset!r}")
        return super().resolve_params({**PRESETS[preset], **given})

    @classmethod
    def validate_params(cls, params):
        config(params).validate()

    def check(self, ctx):
        try:
            plnet.dense_tail(ctx.model)
        except plnet.UnsupportedNetwork as exc:
            return f"3M-DNN modifies dense layers whose inputs are fixed by the layers before them: {exc}"
        return None

    def repair(self, ctx):
        cfg = config(ctx.params)
        try:
            tail = plnet.dense_tail(ctx.model)
        except plnet.UnsupportedNetwork as exc:
            raise Unadaptable(str(exc)) from exc
        split = ctx.split("repair")
        failing = np.nonzero(ctx.failing_mask("repair"))[0]
        if len(failing) == 0:
            return Outcome(model=None, message="the faulty model misclassifies no repair input: nothing to modify",
                           not_repaired=True)
        if cfg.max_points and len(failing) > cfg.max_points:
            failing = np.sort(ctx.rng.choice(failing, size=cfg.max_points, replace=False))
        try:
            a0 = plnet.tail_features(ctx.model, tail, split.x[failing])
        except plnet.UnsupportedNetwork as exc:
            raise Unadaptable(str(exc)) from exc
        y = split.y[failing].astype(np.int64)
        layers = [Layer(layer.w, layer.b, layer.relu) for layer in tail.layers]
        k = min(cfg.layers, len(layers))
        ctx.log(f"dense tail {' -> '.join(str(layer.w.shape[1]) for layer in tail.layers)}; modifying "
                f"{', '.join(layer.weight for layer in tail.layers[-k:])} for {len(failing)} misclassified repair inputs")
        search = ThreeM(layers, a0, y, cfg, ctx.rng, time_left=ctx.remaining, log=ctx.log)

        def report(step, best):
            if not ctx.should_stop():
                ctx.progress(step / max(1, cfg.steps), "search", f"proposal {step}: best change {best:.4g}",
                             best_change=best if np.isfinite(best) else -1.0)

        try:
            result = search.run(should_stop=ctx.should_stop, progress=report)
        except NoSolution as exc:
            return Outcome(model=None, message=str(exc), not_repaired=True,
                           metrics={"lps": float(len(exc.statuses))})
        repaired = plnet.with_tail_weights(ctx.model, tail, result.weights)
        # Checked on the exported model itself (onnxruntime), not on the search's own numbers.
        new_tail = plnet.dense_tail(repaired)
        fixed = int((new_tail.logits_of(plnet.tail_features(repaired, new_tail, split.x[failing])).argmax(axis=1) == y).sum())
        changes = plnet.changed_weights(tail, result.weights)
        per_layer = ", ".join(f"{tail.layers[i].weight} {c:.4g}" for i, c in sorted(result.per_layer.items()))
        summary = (f"3M-DNN changed {len(result.weights)} layer(s) ({per_layer}; {cfg.norm} change {result.change:.4g}); "
                   f"best of {result.proposals} proposals was #{result.best_proposal}; "
                   f"{fixed} of {len(failing)} targeted inputs now correct")
        ctx.log(summary)
        return Outcome(
            model=repaired,
            diagnosis=Diagnosis(
                weights=[LocalisedWeight(t, list(i), s) for t, i, s in changes],
                layers=[tail.layers[i].weight for i in sorted(result.weights)],
                summary=summary,
            ),
            message=summary,
            metrics={"change": result.change, "proposals": float(result.proposals), "targeted": float(len(failing)),
                     "targeted_fixed": float(fixed), "lps": float(len(result.statuses))},
        )


def config(params) -> Config:
    return Config(**{k: params[k] for k in Config.__dataclass_fields__ if k in params})


if __name__ == "__main__":
    serve(ThreeMDNN)
