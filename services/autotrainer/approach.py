"""autotrainer: AutoTrainer (Zhang et al., ICSE 2021) as a recipe-level repairer. Trains the
faulty recipe under AutoTrainer's monitor, decides its training problem (vanishing or exploding
gradient, dying ReLU, oscillating loss, slow convergence) with the original tool's thresholds,
then walks that problem's fix chain in the tool's order, retraining after each solution, until
a retraining shows no problem. Every symptom seen and every solution tried is in the diagnosis."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import autotrainer_core as core  # noqa: E402

from fixbench.sdk import (  # noqa: E402
    Approach,
    BudgetExceeded,
    Diagnosis,
    Outcome,
    Param,
    Predictor,
    RecipeChange,
    Unadaptable,
    load_model,
    serve,
    signature,
)

RECIPE_FAMILY = "training_recipe"
# preset -> values of the parameters it sets (explicitly given parameters win).
PRESETS = {
    # One check per epoch and one sighting per gradient symptom: the zoo's recipes train for a
    # handful of epochs, where the tool's five sightings could never accumulate.
    "default": {"determine_threshold": 1, "check_every": 1, "max_rounds": 10, "satisfied_acc": 0.7},
    # The tool's settings: checktype "epoch_3" (read as a check every third epoch) and
    # determine_threshold 5 (Repair_Module's default), theta 0.7, ten repair rounds.
    "paper": {"determine_threshold": 5, "check_every": 3, "max_rounds": 10, "satisfied_acc": 0.7},
}


class AutoTrainer(Approach):
    name = "autotrainer"
    version = "1.0.0"
    level = "recipe"
    paper = (
        "X. Zhang, J. Zhai, S. Ma, C. Shen. AUTOTRAINER: An Automatic DNN Training Problem Detection "
        "and Repair System. ICSE 2021. doi:10.1109/ICSE43902.2021.00043"
    )
    summary = (
        "Monitors training for five problems with the original thresholds and applies each problem's "
        "fix chain in order, retraining after every solution."
    )
    needs = ("training_data", "validation_data", "training_recipe")
    fault_families = ("training_recipe",)
    params = (
        Param("preset", str, "default", "default or paper: fills the parameters below unless they are given"),
        Param("determine_threshold", int, 1, "checks a gradient symptom must be seen in before it is the problem"),
        Param("check_every", int, 1, "epochs between two monitor checks (the last epoch is always checked)"),
        Param("max_rounds", int, 10, "repair rounds (a round walks one problem's fix chain)"),
        Param("satisfied_acc", float, 0.7, "accuracy (0-1) below which a training has not converged (theta)"),
        Param("min_improvement", float, 0.0, "validation-accuracy margin (0-1) the repaired model must beat the faulty by"),
    )

    @classmethod
    def validate_params(cls, params):
        if params["preset"] not in PRESETS:
            raise ValueError(f"parameter preset must be one of {sorted(PRESETS)}, got {params['preset']!r}")
        for name in ("determine_threshold", "check_every", "max_rounds"):
            if params[name] < 1:
                raise ValueError(f"parameter {name} must be >= 1, got {params[name]}")
        if not 0.0 < params["satisfied_acc"] <= 1.0:
            raise ValueError(f"parameter satisfied_acc must lie in (0, 1], got {params['satisfied_acc']}")
        if not 0.0 <= params["min_improvement"] < 1.0:
            raise ValueError(f"parameter min_improvement must lie in [0, 1), got {params['min_improvement']}")

    def check(self, ctx) -> str | None:
        family = ctx.job.fault_family
        if family != RECIPE_FAMILY:
            return (f"{self.name} repairs training problems by retraining with changed recipes; this job's "
                    f"fault family is {family or 'unset'!r}, not {RECIPE_FAMILY!r}")
        try:
            recipe = ctx.recipe
        except ValueError as exc:
            return f"the job's training recipe is invalid, so there is no training to monitor: {exc}"
        if recipe is None:
            return f"{self.name} needs the faulty model's training recipe, and this job carries none"
        declared = tuple(int(d) for d in ctx.job.data.input_shape)
        return _input_mismatch(ctx.model, declared) if declared else None

    def repair(self, ctx) -> Outcome:
        import torch

        from fixbench.sdk.budget import sample_budget
        from fixbench.sdk.recipes import TrainingDiverged, train

        p = resolved(ctx)
        base = ctx.recipe
        if base is None:
            raise Unadaptable(f"{self.name} needs the faulty model's training recipe, and this job carries none")
        train_split, valid_split = ctx.split("train"), ctx.split("valid")
        mismatch = _input_mismatch(ctx.model, train_split.x.shape[1:])
        if mismatch:
            raise Unadaptable(mismatch)
        num_classes = _num_classes(ctx)
        faulty_acc = _accuracy(ctx.original_predictor.scores(valid_split.x), valid_split.y)
        thresholds = {**core.PAPER_THRESHOLDS, "theta": p["satisfied_acc"]}
        seeds = ctx.rng.spawn(2)
        seed_rng, choice_rng = seeds[0], seeds[1]
        started = time.monotonic()
        runs = [0]
        # A budget in training samples (the shipped studies'): every training costs its planned
        # samples seen, epochs x training-set size, paid before it runs.
        samples_left = [sample_budget(ctx)]

        def admit(recipe) -> bool:
            if samples_left[0] is None:
                return True
            cost = float(recipe.epochs * len(train_split.y))
            if cost > samples_left[0]:
                return False
            samples_left[0] -= cost
            return True

        def make_monitor(recipe):
            return core.Monitor(recipe.epochs, thresholds, p["determine_threshold"], p["check_every"])

        def train_fn(recipe, monitor):
            runs[0] += 1
            try:
                result = train(recipe, (train_split.x, train_split.y), (valid_split.x, valid_split.y),
                               seed=int(seed_rng.integers(2**31 - 1)), deadline=ctx.deadline,
                               num_classes=num_classes, on_epoch=monitor)
            except TrainingDiverged:
                return None, None
            scores = Predictor(result.onnx_bytes).scores(valid_split.x)
            if not np.isfinite(scores).all():
                return None, None
            return result, _accuracy(scores, valid_split.y)

        def on_attempt(attempt):
            ctx.log("attempt " + json.dumps(attempt.record(), default=str))
            try:
                ctx.progress(-1, "repair", f"{runs[0]} training(s): {attempt.solution}_{attempt.variant} "
                             f"-> {attempt.outcome}")
            except BudgetExceeded:
                pass  # the loop checks should_stop before the next retraining

        ctx.progress(0.0, "monitor", "training the faulty recipe under the monitor")
        first = make_monitor(base)
        if samples_left[0] is not None:  # the monitored faulty training is paid for in any case
            samples_left[0] -= float(base.epochs * len(train_split.y))
        train_fn(base, first)
        ctx.log("monitor " + json.dumps({"issues": first.issues, "checks": first.seen}, default=str))
        run = core.autotrain(base, make_monitor, train_fn, choice_rng, max_rounds=p["max_rounds"],
                             should_stop=ctx.should_stop, on_attempt=on_attempt,
                             batch_cap=len(train_split.y), initial_issues=list(first.issues), admit=admit)
        tried = [a for a in run.attempts if a.outcome != "not expressible"]
        metrics = {
            "trainings": float(runs[0]),
            "solutions_tried": float(len(tried)),
            "solutions_not_expressible": float(len(run.attempts) - len(tried)),
            "faulty_valid_acc": faulty_acc,
            "solved": float(run.solved),
            "search_seconds": time.monotonic() - started,
            "stopped_by_budget": float(run.stopped_early),
        }
        symptoms = ", ".join(core.SYMPTOM_NAMES[s] for s in run.symptoms_seen) or "none"
        chain = "; ".join(f"{a.solution}_{a.variant} ({a.outcome})" for a in run.attempts)
        if not run.initial_issues:
            return Outcome(model=None, metrics=metrics,
                           message="the monitor found no training problem in the faulty recipe, so there is nothing to fix",
                           diagnosis=Diagnosis(summary="no AutoTrainer symptom detected"))
        # Every solution tried, in order, as recipe changes against the faulty recipe's values;
        # the chosen one's changes come first.
        changes = _changes(base, run)
        chosen = run.chosen
        summary = (f"symptoms seen: {symptoms}; fix chain: {chain or 'nothing applicable'}; "
                   + (f"chosen {chosen.solution}_{chosen.variant} ({chosen.description}), valid acc "
                      f"{faulty_acc:.4f} -> {chosen.valid_accuracy:.4f}" if chosen and chosen.valid_accuracy is not None
                      else "no solution improved the training"))
        if chosen is None or chosen.result is None or chosen.valid_accuracy is None:
            return Outcome(model=None, metrics=metrics, message=summary,
                           diagnosis=Diagnosis(recipe_changes=changes, summary=summary))
        metrics["best_valid_acc"] = chosen.valid_accuracy
        if chosen.valid_accuracy <= faulty_acc + p["min_improvement"]:
            return Outcome(model=None, metrics=metrics,
                           message=f"{summary}; it does not beat the faulty model on validation ({faulty_acc:.4f})",
                           diagnosis=Diagnosis(recipe_changes=changes, summary=summary))
        example = torch.from_numpy(np.ascontiguousarray(valid_split.x[:1], dtype=np.float32))
        model_bytes = ctx.export(chosen.result.module, example)
        if signature(load_model(model_bytes)) != signature(ctx.model):
            raise RuntimeError("the retrained model's signature differs from the faulty model's")
        return Outcome(model=model_bytes, metrics=metrics, message=summary,
                       diagnosis=Diagnosis(recipe_changes=changes, repaired_recipe=chosen.recipe, summary=summary))


def resolved(ctx) -> dict:
    """ctx.params with the preset's values for every parameter the job did not give."""
    params = dict(ctx.params)
    given = set(ctx.job.params.fields) if ctx.job.HasField("params") else set()
    for name, value in PRESETS[params["preset"]].items():
        if name not in given:
            params[name] = value
    return params


def _changes(base, run) -> list[RecipeChange]:
    """The chosen recipe's diff first, then each further field a tried solution changed (in the
    order tried), so that the diagnosis names every fix tried and ranks the one kept."""
    out: list[RecipeChange] = []
    seen = set()
    ordered = ([run.chosen] if run.chosen is not None else []) + [a for a in run.attempts if a.recipe is not None]
    for attempt in ordered:
        for field, old, new in base.diff(attempt.recipe):
            key = (field, json.dumps(new, default=str))
            if key not in seen:
                seen.add(key)
                out.append(RecipeChange(field, _jsonable(old), _jsonable(new)))
    return out


def _jsonable(value):
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "items"):
        return dict(value)
    return value


def _accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy with NaN/Inf rows counted wrong."""
    finite = np.isfinite(scores).all(axis=1)
    return float(((scores.argmax(axis=1) == labels) & finite).mean())


def _input_mismatch(model, input_shape) -> str | None:
    inputs, outputs = signature(model)
    if len(inputs) != 1 or len(outputs) < 1:
        return f"the faulty model has {len(inputs)} input(s) and {len(outputs)} output(s); the zoo trains single-input classifiers"
    dims = inputs[0][1][1:]
    if len(dims) != len(input_shape) or any(d not in (-1, s) for d, s in zip(dims, input_shape, strict=True)):
        return f"the faulty model takes inputs of shape {list(dims)}, but the data holds inputs of shape {list(input_shape)}"
    return None


def _num_classes(ctx) -> int | None:
    out_dims = signature(ctx.model)[1][0][1]
    if out_dims and out_dims[-1] > 0:
        return int(out_dims[-1])
    return int(ctx.job.data.num_classes) or None


if __name__ == "__main__":
    serve(AutoTrainer)
