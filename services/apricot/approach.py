"""apricot: Apricot (H. Zhang, W. K. Chan, "Apricot: A Weight-Adaptation Approach to Fixing
Deep Learning Models", ASE 2019). Trains reduced models of the faulty model's architecture on
small subsets of the training data, then for every failing repair input moves the faulty
model's weights towards the mean of the reduced models that classify it correctly and away
from the mean of those that do not ("both-org"), retrains briefly and keeps the best weights
on validation."""

from __future__ import annotations

import sys
import time
from pathlib import Path

# Run as a script the folder is on sys.path; loaded by path (tests) it is not.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import apricot_core as core  # noqa: E402

from fixbench.sdk import Approach, Diagnosis, Outcome, Param, ParamError, serve  # noqa: E402
from fixbench.sdk.torch_helpers import classification_loss, outputs_are_probabilities  # noqa: E402

# The published settings (the reimplementation's, coinse/arachne apricot/, which You et al.
# ran); explicitly given parameters override a preset.
PRESETS = {
    "default": {},
    "paper": {
        "reduced_models": 20, "subset_size": 1000, "reduced_epochs": 60, "reduced_lr": 2e-4, "adjust_lr": 1e-3,
        "retrain_epochs": 5, "retrain_lr": 2e-4, "batch_size": 20, "retrain_samples": 10**9, "rounds": 1,
        "patience": 100,
    },
}


class Apricot(Approach):
    name = "apricot"
    version = "1.0.0"
    level = "model"
    paper = ("H. Zhang, W. K. Chan. Apricot: A Weight-Adaptation Approach to Fixing Deep Learning Models. "
             "ASE 2019. doi:10.1109/ASE.2019.00043")
    summary = ("Weight adaptation from reduced models: pull the weights towards the mean of the reduced "
               "models that get a failing input right, away from those that do not; retrain briefly; keep "
               "the best on validation.")
    needs = ("repair_data", "training_data", "validation_data")
    fault_families = ("misclassification",)
    params = (
        Param("preset", str, "default", "default (scaled for minutes on 2 CPU cores) or paper (the published settings)"),
        Param("reduced_models", int, 8, "number of reduced models (rDLMs)"),
        Param("subset_size", int, 500, "training samples per reduced model (class-balanced)"),
        Param("reduced_epochs", int, 15, "training epochs of each reduced model"),
        Param("reduced_lr", float, 1e-3, "Adam learning rate of the reduced models"),
        Param("adjust_lr", float, 1e-3, "step size of the weight adjustment"),
        Param("strategy", str, "both-org", f"adjustment strategy: {', '.join(core.STRATEGIES)}"),
        Param("retrain_epochs", int, 1, "retraining epochs after each batch's adjustments (0: none)"),
        Param("retrain_lr", float, 2e-4, "Adam learning rate of the retraining"),
        Param("batch_size", int, 20, "failing-input batch and training mini-batch size"),
        Param("retrain_samples", int, 1000, "training samples mixed with the repair split in each retraining"),
        Param("rounds", int, 3, "passes over the repair split"),
        Param("patience", int, 20, "batches without a validation improvement before stopping"),
        Param("reduced_budget_share", float, 0.5,
              "most of the job's budget the reduced models may take, so that adjustment always gets its turn"),
    )

    @classmethod
    def validate_params(cls, params):
        if params["preset"] not in PRESETS:
            raise ParamError(f"parameter 'preset' must be one of {', '.join(PRESETS)}, not {params['preset']!r}")
        if params["strategy"] not in core.STRATEGIES:
            raise ParamError(f"parameter 'strategy' must be one of {', '.join(core.STRATEGIES)}")
        for name in ("reduced_models", "subset_size", "batch_size", "rounds"):
            if params[name] < 1:
                raise ParamError(f"parameter {name!r} must be at least 1")
        for name in ("reduced_epochs", "retrain_epochs", "retrain_samples", "patience"):
            if params[name] < 0:
                raise ParamError(f"parameter {name!r} must not be negative")
        if not 0.0 < params["reduced_budget_share"] <= 1.0:
            raise ParamError("parameter 'reduced_budget_share' must be in (0, 1]")
        for name in ("reduced_lr", "adjust_lr", "retrain_lr"):
            if not params[name] > 0:
                raise ParamError(f"parameter {name!r} must be positive")

    @classmethod
    def resolve_params(cls, given):
        values = super().resolve_params(given)
        for key, value in PRESETS[values["preset"]].items():
            if key not in given:
                values[key] = value
        return values

    def check(self, ctx):
        return core.can_reinitialise(ctx.torch_model())

    def repair(self, ctx):
        import torch

        p = ctx.params
        s = core.Settings(**{k: p[k] for k in core.Settings.__dataclass_fields__})
        repair, train, valid = ctx.split("repair"), ctx.split("train"), ctx.split("valid")
        failing = int(ctx.failing_mask("repair").sum())
        if failing == 0:
            return Outcome(model=None, message="the faulty model gets every repair input right: nothing to fix")
        model = ctx.torch_model()
        loss_fn = classification_loss(outputs_are_probabilities(ctx.original_predictor.scores(valid.x[:64])))
        torch.manual_seed(ctx.seed)
        ctx.log(f"training {s.reduced_models} reduced models on {min(s.subset_size, len(train))}-sample subsets; "
                f"{failing} failing repair inputs")

        # Under a budget the reduced models get at most their share of it (but two at least, the
        # fewest that can disagree), so that a slow architecture still reaches the adjustment.
        budget = ctx.budget_seconds
        reduced_deadline = None if budget is None else ctx.started + p["reduced_budget_share"] * budget
        trained = [0]

        def reduced_stop():
            late = reduced_deadline is not None and time.monotonic() > reduced_deadline and trained[0] >= 2
            return ctx.should_stop() or late

        def reduced_progress(i, acc):
            trained[0] = i + 1
            if ctx.should_stop():  # out of budget: the loops stop and the best so far is returned
                return
            ctx.progress(0.5 * (i + 1) / s.reduced_models, "reduced-models",
                         f"reduced model {i + 1}/{s.reduced_models}: valid acc {acc:.4f}", valid_acc=acc)

        reduced = core.train_reduced_models(model, (train.x, train.y), (valid.x, valid.y), s, loss_fn, ctx.rng,
                                            ctx.seed, reduced_progress, reduced_stop)
        if len(reduced) < s.reduced_models:
            ctx.log(f"{len(reduced)} of {s.reduced_models} reduced models trained within their share of the budget")
        if not reduced:
            return Outcome(model=None, message="the budget ran out before a reduced model was trained")
        original = core.flat_weights(model)

        def fix_progress(b, n, acc, best):
            if ctx.should_stop():
                return
            ctx.progress(0.5 + 0.5 * min(1.0, b / max(n, 1)), "adjust",
                         f"batch {b}/{n}: valid acc {acc:.4f} (best {best:.4f})", valid_acc=acc, best_valid_acc=best)

        result = core.repair(model, reduced, (repair.x, repair.y), (train.x, train.y), (valid.x, valid.y), s,
                             loss_fn, ctx.rng, fix_progress, ctx.should_stop)
        metrics = {"reduced_models": float(len(reduced)), "base_valid_acc": result.base_valid_acc,
                   "valid_acc": result.best_valid_acc, "improvements": float(result.improvements),
                   "batches": float(result.batches), "adjustments": float(result.adjustments),
                   "skipped_inputs": float(result.skipped)}
        if result.improvements == 0:
            why = ("the budget ran out before any adjustment improved validation accuracy" if ctx.should_stop()
                   else "no adjustment or retraining improved validation accuracy")
            return Outcome(model=None, metrics=metrics, message=f"{why}; the model is left unchanged")
        return Outcome(model=ctx.export(result.model), metrics=metrics,
                       diagnosis=_diagnosis(model, original, result))


def _diagnosis(model, original, result) -> Diagnosis:
    """Apricot does not localise before it acts; what it reports is where the weights moved
    (relative change per parameter tensor), largest first."""
    names = [n for n, _ in model.named_parameters()]
    changes = []
    for name, before, after in zip(names, original, model.parameters(), strict=True):
        delta = float((after.detach() - before).norm() / (before.norm() + 1e-12))
        changes.append((delta, name))
    changes.sort(reverse=True)
    return Diagnosis(
        layers=[n for _, n in changes],
        summary=(f"{result.adjustments} weight adjustments from reduced models, {result.improvements} kept; "
                 f"valid acc {result.base_valid_acc:.4f} -> {result.best_valid_acc:.4f}; largest relative weight "
                 "change in " + ", ".join(f"{n} ({d:.3g})" for d, n in changes[:3])),
    )


if __name__ == "__main__":
    serve(Apricot)
