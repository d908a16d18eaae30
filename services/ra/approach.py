"""ra: provable repair of one layer of a piecewise-linear network (PRDNN, Sotoudeh & Thakur,
PLDI 2021), the LP solved by HiGHS (highspy) where the original uses Gurobi."""

import os
import sys

import numpy as np

from fixbench.sdk import (
    Approach,
    Diagnosis,
    LocalisedWeight,
    Outcome,
    Param,
    ParamError,
    Predictor,
    Unadaptable,
    plnet,
    serve,
)

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import prdnn_repair as pr  # noqa: E402

# default: the last dense layer, a capped number of points, sized for one quick MNIST job in
# seconds on 2 cores. paper: every misclassified repair point plus as many correctly classified
# ones held to their labels, as PRDNN's pointwise-repair experiments specify points and labels.
PRESETS = {
    "default": dict(layer=-1, norm="linf", margin=0.05, max_points=100, keep=100, lp_seconds=120.0),
    "paper": dict(layer=-1, norm="linf", margin=0.05, max_points=0, keep=-1, lp_seconds=3600.0),
}
_D = PRESETS["default"]
NORMS = ("linf", "l1")


class ProvableRepair(Approach):
    name = "ra"
    version = "1.0.0"
    level = "layer"
    paper = ("M. Sotoudeh, A. V. Thakur. Provable Repair of Deep Neural Networks. PLDI 2021, pp. 588-603. "
             "doi:10.1145/3453483.3454064 (You et al.'s 'RA'; identity not settled, see README)")
    summary = ("Decouples activations from values and solves one LP (HiGHS) for the smallest change of one "
               "layer that classifies every repair point correctly (provably, on those points), with "
               "correctly classified repair points held to their labels.")
    needs = ("repair_data",)
    fault_families = ("misclassification",)
    uses_torch = False
    params = (
        Param("preset", str, "default", "default or paper: fills the other parameters' defaults"),
        Param("layer", int, _D["layer"], "dense layer repaired, Python-style index into the dense tail (-1 = last)"),
        Param("norm", str, _D["norm"], "size of the change minimised: linf or l1"),
        Param("margin", float, _D["margin"], "correct-class logit lead required on every repair point"),
        Param("max_points", int, _D["max_points"], "misclassified repair inputs to repair (0 = all)"),
        Param("keep", int, _D["keep"], "correctly classified repair inputs held to their labels (-1 = all)"),
        Param("lp_seconds", float, _D["lp_seconds"], "LP time limit (also capped by the job budget)"),
    )

    @classmethod
    def resolve_params(cls, given):
        preset = given.get("preset", "default")
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ParamError(f"preset must be one of {sorted(PRESETS)}, not {preset!r}")
        return super().resolve_params({**PRESETS[preset], **given})

    @classmethod
    def validate_params(cls, params):
        if params["norm"] not in NORMS:
            raise ParamError(f"norm must be one of {NORMS}, not {params['norm']!r}")
        if params["margin"] < 0 or params["lp_seconds"] <= 0 or params["max_points"] < 0 or params["keep"] < -1:
            raise ParamError("margin must be >= 0, lp_seconds > 0, max_points >= 0, keep >= -1")

    def check(self, ctx):
        return unadaptable_reason(ctx.model, int(ctx.params["layer"]))

    def repair(self, ctx):
        p = ctx.params
        reason = unadaptable_reason(ctx.model, int(p["layer"]))
        if reason:
            raise Unadaptable(reason)
        tail = plnet.dense_tail(ctx.model)
        k = pr.resolve_layer(tail, int(p["layer"]))
        split = ctx.split("repair")
        wrong = ctx.failing_mask("repair")
        failing, correct = np.nonzero(wrong)[0], np.nonzero(~wrong)[0]
        if len(failing) == 0:
            return Outcome(model=None, message="the faulty model misclassifies no repair input: nothing to repair",
                           not_repaired=True)
        if p["max_points"] and len(failing) > p["max_points"]:
            failing = np.sort(ctx.rng.choice(failing, size=p["max_points"], replace=False))
        if p["keep"] >= 0 and len(correct) > p["keep"]:
            correct = np.sort(ctx.rng.choice(correct, size=p["keep"], replace=False))
        points = np.concatenate([failing, correct])
        try:
            a0 = plnet.tail_features(ctx.model, tail, split.x[points])
        except plnet.UnsupportedNetwork as exc:
            raise Unadaptable(str(exc)) from exc
        y = split.y[points].astype(np.int64)
        layer = tail.layers[k]
        ctx.log(f"repairing {layer.weight} ({layer.w.shape[0]}x{layer.w.shape[1]}) of the value channel on "
                f"{len(failing)} misclassified + {len(correct)} held repair points")
        ctx.progress(0.1, "lp", "building the LP")
        prob = pr.build_problem(tail, k, a0, y)
        limit = max(0.5, min(p["lp_seconds"], ctx.remaining() - 5.0))
        res, dw, db = pr.solve(prob, p["margin"], p["norm"], limit, seed=ctx.seed)
        ctx.progress(0.9, "lp", f"HiGHS: {res.status}", seconds=res.seconds)
        if not res.ok:
            return Outcome(model=None, not_repaired=True,
                           message=f"the repair LP has no solution: HiGHS status {res.status!r} "
                                   f"({len(points)} points, layer {layer.weight}, {res.seconds:.1f} s)",
                           metrics={"lp_seconds": res.seconds})
        w_new, b_new = layer.w + dw, layer.b + db
        repaired = pr.decoupled_model(ctx.model, tail, k, w_new, b_new)
        # Provable on the points: checked again on the exported model with onnxruntime.
        pred = Predictor(repaired.SerializeToString()).predict(split.x[points])
        fixed = int((pred[: len(failing)] == y[: len(failing)]).sum())
        kept = int((pred[len(failing):] == y[len(failing):]).sum())
        changes = plnet.changed_weights(tail, {k: (w_new, b_new)})
        decoupled = k != len(tail.layers) - 1
        n_changed = int((np.abs(dw) > 1e-9).sum() + (np.abs(db) > 1e-9).sum())
        summary = (f"PRDNN changed {layer.weight} ({p['norm']} change {res.objective:.4g}, "
                   f"{n_changed} of {dw.size + db.size} weights){' as a decoupled network' if decoupled else ''}; "
                   f"{fixed}/{len(failing)} repair points fixed, {kept}/{len(correct)} held points kept")
        ctx.log(summary)
        return Outcome(
            model=repaired,
            diagnosis=Diagnosis(weights=[LocalisedWeight(t, list(i), s) for t, i, s in changes],
                                layers=[layer.weight], summary=summary),
            message=summary,
            metrics={"change": res.objective, "lp_seconds": res.seconds, "points": float(len(points)),
                     "fixed": float(fixed), "kept": float(kept), "decoupled": float(decoupled)},
        )


def unadaptable_reason(model, layer: int) -> str | None:
    """PRDNN repairs piecewise-linear networks; this implementation repairs a dense layer of a
    plain sequential one (the structure its decoupled value channel is built on)."""
    problem = plnet.sequential_problem(model)
    if problem:
        return f"provable repair needs a plain sequential piecewise-linear network: {problem}"
    try:
        tail = plnet.dense_tail(model)
        pr.resolve_layer(tail, layer)
    except plnet.UnsupportedNetwork as exc:
        return f"provable repair of a dense layer: {exc}"
    return None


if __name__ == "__main__":
    serve(ProvableRepair)
