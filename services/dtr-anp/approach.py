"""DTR — not settled; implemented as Adversarial Neuron Pruning (ANP; Wu & Wang, NeurIPS 2021) on
BatchNorm neurons: masks on every BatchNorm channel are optimised under adversarial neuron
perturbation on the repair inputs, and the neurons whose mask falls below a threshold are
pruned. See README.md for why, with what confidence, and what was scaled."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import anp as core  # noqa: E402

from fixbench.sdk import Approach, Diagnosis, LocalisedNeuron, Outcome, Param, ParamError, serve  # noqa: E402
from fixbench.sdk.torch_helpers import classification_loss, outputs_are_probabilities  # noqa: E402

# ANP's published defaults (csdongxian/ANP_backdoor: optimize_mask_cifar.py / prune_neuron_cifar.py):
# ε 0.4, 1 perturbation step, α 0.2, mask lr 0.2, 2,000 iterations of batch 128, threshold 0.2.
# The default preset only shortens the optimisation. Explicitly given parameters override.
PRESETS = {
    "default": {},
    "paper": {"iterations": 2000, "batch_size": 128, "max_inputs": 0},
}


class ANP(Approach):
    name = "dtr-anp"
    version = "1.0.0"
    level = "neuron"
    paper = ("D. Wu, Y. Wang. Adversarial Neuron Pruning Purifies Backdoored Deep Models. NeurIPS 2021 "
             "(code: csdongxian/ANP_backdoor)")
    summary = ("DTR (You et al.'s abbreviation; not settled, implemented as ANP): masks on the BatchNorm neurons "
               "optimised under adversarial neuron perturbation on the repair inputs; neurons whose mask falls "
               "below the threshold are pruned. Needs a deep BatchNorm CNN.")
    needs = ("repair_data", "validation_data")
    fault_families = ("misclassification",)
    params = (
        Param("preset", str, "default", "default (minutes on 2 CPU cores) or paper (ANP's published settings)"),
        Param("iterations", int, 200, "mask optimisation steps (mini-batches)"),
        Param("batch_size", int, 128, "mini-batch size"),
        Param("eps", float, 0.4, "bound ε of the adversarial neuron perturbation (relative, on γ and β)"),
        Param("steps", int, 1, "signed ascent steps of the perturbation per mini-batch"),
        Param("alpha", float, 0.2, "weight α of the natural loss (1 − α: the perturbed loss)"),
        Param("learning_rate", float, 0.2, "SGD (momentum 0.9) learning rate of the masks"),
        Param("threshold", float, 0.2, "largest pruning threshold: neurons whose mask ends below it may be pruned"),
        Param("threshold_step", float, 0.05, "the thresholds tried: step, 2·step, … up to threshold; best on validation wins"),
        Param("max_pruned", float, 0.9, "most neurons pruned, as a fraction of all BatchNorm neurons"),
        Param("min_bn_layers", int, 8, "fewest BatchNorm layers the model must have (Check: UNADAPTABLE below)"),
        Param("max_inputs", int, 2000, "repair inputs used (0: all); the failing ones are always kept"),
    )

    @classmethod
    def validate_params(cls, p):
        if p["preset"] not in PRESETS:
            raise ParamError(f"parameter 'preset' must be one of {', '.join(PRESETS)}, not {p['preset']!r}")
        for name in ("iterations", "batch_size", "min_bn_layers"):
            if p[name] < 1:
                raise ParamError(f"parameter {name!r} must be at least 1")
        if p["steps"] < 0 or p["max_inputs"] < 0 or p["eps"] < 0:
            raise ParamError("parameters 'steps', 'max_inputs' and 'eps' must not be negative")
        for name in ("alpha", "threshold", "max_pruned"):
            if not 0.0 <= p[name] <= 1.0:
                raise ParamError(f"parameter {name!r} must lie in [0, 1]")
        if not p["learning_rate"] > 0:
            raise ParamError("parameter 'learning_rate' must be positive")
        if not 0.0 < p["threshold_step"] <= max(p["threshold"], 1e-9):
            raise ParamError("parameter 'threshold_step' must be positive and at most 'threshold'")

    @classmethod
    def resolve_params(cls, given):
        values = super().resolve_params(given)
        for key, value in PRESETS[values["preset"]].items():
            if key not in given:
                values[key] = value
        return values

    def check(self, ctx):
        # The repair split is read first (Fix reuses it: the context caches it) so that a job
        # whose inputs cannot be read fails as an infrastructure error, not as UNADAPTABLE.
        if ctx.has_split("repair"):
            ctx.split("repair")
        return unadaptable_reason(ctx.model, ctx.params["min_bn_layers"])

    def repair(self, ctx):
        import numpy as np
        import torch

        p = ctx.params
        torch.manual_seed(ctx.seed)
        repair = ctx.split("repair")
        failing = ctx.failing_mask("repair")
        if not failing.any():
            return Outcome(model=None, message="the faulty model gets every repair input right: nothing to fix")
        idx = np.arange(len(repair.y))
        if p["max_inputs"] and len(idx) > p["max_inputs"]:
            fail_idx, pass_idx = np.flatnonzero(failing), np.flatnonzero(~failing)
            keep = max(0, p["max_inputs"] - len(fail_idx))
            idx = np.sort(np.concatenate([fail_idx, ctx.rng.choice(pass_idx, size=min(keep, len(pass_idx)),
                                                                   replace=False)]))
        x = np.ascontiguousarray(repair.x[idx], dtype=np.float32)
        y = repair.y[idx].astype(np.int64)

        module = ctx.torch_model()
        core.prepare_channels(module, x)
        nodes = core.bn_nodes(ctx.model)
        mods = core.bn_modules(module)
        if len(mods) != len(nodes):
            raise RuntimeError(f"{len(nodes)} BatchNormalization nodes but {len(mods)} BatchNorm modules after "
                               "conversion: cannot tell which neuron is which")
        names = [n.name or f"BatchNormalization_{i}" for i, n in enumerate(nodes)]
        probs = outputs_are_probabilities(ctx.original_predictor.scores(x[:64]))
        ctx.progress(0.0, "mask optimisation", f"{sum(core._channels(m) for _, m in mods)} BatchNorm neurons in "
                     f"{len(mods)} layers, {len(y)} repair inputs ({int(failing.sum())} failing)")

        def report(it, loss):
            if ctx.should_stop():  # out of budget: return the best so far, do not raise here
                return
            ctx.progress(it / p["iterations"], "mask optimisation", f"step {it}: loss {loss:.4f}", loss=loss)

        masks = core.optimise_masks(module, x, y, classification_loss(probs), p["iterations"], p["batch_size"],
                                    p["eps"], p["steps"], p["alpha"], p["learning_rate"], ctx.rng,
                                    ctx.should_stop, report)
        # ANP's pruning script sweeps the threshold in steps (pruning_step 0.05) and reports each
        # pruned model; a fixing run has to pick one itself: the best on the validation split.
        valid = ctx.split("valid")
        base_acc = float((ctx.original_predictor.predict(valid.x) == valid.y).mean())
        best_acc, pruned, best_model, best_thr, tried = base_acc, [], None, 0.0, []
        steps = int(np.floor(p["threshold"] / p["threshold_step"] + 1e-9))
        for k in range(1, steps + 1):
            thr = k * p["threshold_step"]
            cand = core.select_pruned(masks, names, thr, p["max_pruned"])
            if not cand or (tried and len(cand) == tried[-1][1]):
                continue
            candidate = core.write_pruned(ctx.model, cand)
            acc = float((ctx.predictor(candidate.SerializeToString()).predict(valid.x) == valid.y).mean())
            tried.append((thr, len(cand), acc))
            if acc > best_acc:
                best_acc, pruned, best_model, best_thr = acc, cand, candidate, thr
        lowest = sorted(((float(m[c]), names[i], c) for i, m in enumerate(masks) for c in range(len(m))))[:10]
        diagnosis = Diagnosis(
            # Score = 1 − mask: how strongly ANP wants the neuron gone.
            neurons=[LocalisedNeuron(n.layer, n.index, 1.0 - n.mask) for n in pruned],
            layers=sorted({n.layer for n in pruned}),
            summary=(f"{len(pruned)} of {sum(len(m) for m in masks)} BatchNorm neurons pruned (threshold "
                     f"{best_thr:.2f}; valid acc {base_acc:.4f} -> {best_acc:.4f}); thresholds tried: "
                     + (", ".join(f"{t:.2f}: {n} pruned, acc {a:.4f}" for t, n, a in tried) or "none pruned any")
                     + "; lowest masks: " + ", ".join(f"{layer}[{c}]={v:.3f}" for v, layer, c in lowest[:5])))
        metrics = {"pruned": float(len(pruned)), "bn_neurons": float(sum(len(m) for m in masks)),
                   "min_mask": float(lowest[0][0]) if lowest else 1.0, "valid_acc_before": base_acc,
                   "valid_acc": best_acc, "threshold": best_thr}
        if best_model is None:
            return Outcome(model=None, diagnosis=diagnosis, metrics=metrics,
                           message="no pruning threshold improved validation accuracy: " + diagnosis.summary)
        return Outcome(model=best_model, diagnosis=diagnosis, metrics=metrics, message=diagnosis.summary)


def unadaptable_reason(model, min_bn_layers: int) -> str | None:
    """Why ANP cannot apply, or None. Cheap: counts the graph's BatchNormalization nodes."""
    count = len(core.bn_nodes(model))
    if count == 0:
        return ("ANP masks and perturbs BatchNorm neurons (γ, β of each channel): the model has no "
                "BatchNormalization layer")
    if count < min_bn_layers:
        return (f"ANP targets deep BatchNorm CNNs (VGG / ResNet / DenseNet class): the model has {count} "
                f"BatchNormalization layers, fewer than min_bn_layers={min_bn_layers}")
    return None


if __name__ == "__main__":
    serve(ANP)
