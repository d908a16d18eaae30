"""The shared frame of a recipe-search approach (HEBO, BOHB, …): check the job, score the faulty
model, run the method's proposer on the trial engine (`fixbench.sdk.trials`) under the job's
budget, and return the best retrained model with its recipe diff as the diagnosis. A service
subclasses `RecipeSearchApproach` and implements `make_proposer`; the method lives there."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np

from fixbench.onnxio import load_model
from fixbench.onnxio.validate import signature
from fixbench.sdk.approach import Approach, Param, ParamError
from fixbench.sdk.budget import sample_budget, trial_seconds_cap
from fixbench.sdk.errors import BudgetExceeded, Unadaptable
from fixbench.sdk.outcome import Diagnosis, Outcome, RecipeChange
from fixbench.sdk.trials import (
    Proposer,
    RecipeData,
    SearchResult,
    TrialBudget,
    TrialEngine,
    TrialResult,
    recipe_trial,
    scored_accuracy,
)

RECIPE_FAMILY = "training_recipe"

COMMON_PARAMS = (
    Param("preset", str, "default", "default (scaled for minutes on 2 CPU cores) or paper (the published settings)"),
    Param("trial_time_multiple", float, 5.0,
          "cap on one trial's wall time, as a multiple of the faulty model's training time, so that one slow "
          "recipe cannot spend the whole budget (0: only the job budget applies)"),
    Param("min_improvement", float, 0.0,
          "validation-accuracy margin (a fraction, 0-1) by which a recipe must beat the faulty model"),
)


class RecipeSearchApproach(Approach):
    """Base of a search over the Kim et al. recipe space; see the module docstring."""

    level = "recipe"
    needs = ("training_data", "validation_data", "training_recipe")
    fault_families = (RECIPE_FAMILY,)
    # preset name -> parameter values it sets; explicitly given parameters override a preset.
    presets: dict[str, dict[str, Any]] = {"default": {}, "paper": {}}

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> None:
        if params["preset"] not in cls.presets:
            raise ParamError(f"parameter 'preset' must be one of {', '.join(cls.presets)}, not {params['preset']!r}")
        if not 0.0 <= params["min_improvement"] < 1.0:
            raise ParamError(f"parameter 'min_improvement' must lie in [0, 1), got {params['min_improvement']}")
        if params["trial_time_multiple"] < 0:
            raise ParamError(f"parameter 'trial_time_multiple' must be >= 0, got {params['trial_time_multiple']}")

    @classmethod
    def resolve_params(cls, given: dict[str, Any]) -> dict[str, Any]:
        values = super().resolve_params(given)
        for key, value in cls.presets[values["preset"]].items():
            if key not in given:
                values[key] = value
        cls.validate_params(values)
        return values

    def make_proposer(self, ctx, base, train_samples: int, engine: TrialEngine) -> Proposer:
        raise NotImplementedError

    def trial_function(self):
        """The function that runs one trial (the SDK's recipe trial unless a service wraps it)."""
        return recipe_trial

    # ---- Check ----------------------------------------------------------------------------
    def check(self, ctx) -> str | None:
        family = ctx.job.fault_family
        if family != RECIPE_FAMILY:
            return (f"{self.name} repairs training-recipe faults by retraining with other recipes; this job's "
                    f"fault family is {family or 'unset'!r}, not {RECIPE_FAMILY!r}")
        try:
            recipe = ctx.recipe
        except ValueError as exc:
            return f"the job's training recipe is invalid, so there is nothing to search from: {exc}"
        if recipe is None:
            return f"{self.name} needs the faulty model's training recipe, and this job carries none"
        declared = tuple(int(d) for d in ctx.job.data.input_shape)
        return input_mismatch(ctx.model, declared) if declared else None

    # ---- Fix ------------------------------------------------------------------------------
    def repair(self, ctx) -> Outcome:
        import torch

        p = ctx.params
        base = ctx.recipe
        if base is None:
            raise Unadaptable(f"{self.name} needs the faulty model's training recipe, and this job carries none")
        train_split, valid_split = ctx.split("train"), ctx.split("valid")
        mismatch = input_mismatch(ctx.model, train_split.x.shape[1:])
        if mismatch:
            raise Unadaptable(mismatch)
        faulty_acc = scored_accuracy(ctx.original_predictor.scores(valid_split.x), valid_split.y)
        max_trials = int(ctx.job.budget.max_trials)
        remaining = ctx.remaining()
        # fixbench.sdk.budget: under a sample budget (the shipped studies') trials are admitted by
        # their planned samples and never cut by the clock, so a seed runs the same trials anywhere.
        budget = TrialBudget(
            max_cost=sample_budget(ctx),
            deadline_wall=time.time() + remaining if math.isfinite(remaining) else None,
            trial_seconds=trial_seconds_cap(ctx, p["trial_time_multiple"]),
            max_trials=max_trials,
        )
        engine = TrialEngine.from_env()
        proposer = self.make_proposer(ctx, base, len(train_split.y), engine)
        data = RecipeData((train_split.x, train_split.y), (valid_split.x, valid_split.y), num_classes(ctx))
        ctx.log(f"{self.name} search from {json.dumps(base.to_dict(), default=str)}; faulty valid acc "
                f"{faulty_acc:.4f}; budget {_seconds(ctx.budget_seconds)}, max trials {max_trials or 'none'}, "
                f"per-trial cap {_seconds(budget.trial_seconds)}, training samples {budget.max_cost or 'no cap'}; "
                f"trials: {engine.describe()}")
        started = time.monotonic()
        trial_fn = self.trial_function()

        def on_result(result: TrialResult, search: SearchResult) -> None:
            ctx.log("trial " + json.dumps(trial_record(base, result), default=str))
            best = search.best
            fraction = max(len(search.results) / max_trials if max_trials else 0.0,
                           (time.monotonic() - started) / ctx.budget_seconds if ctx.budget_seconds else 0.0)
            extra = {} if best is None else {"best_valid_acc": best.score}
            try:
                ctx.progress(min(fraction, 1.0), "search", f"{len(search.results)} trial(s) run", **extra)
            except BudgetExceeded:
                pass  # the engine sees the deadline too and ends the search with its best so far

        search = engine.run(proposer, trial_fn, data, budget, should_stop=ctx.should_stop, on_result=on_result,
                            on_epoch=lambda spec, f, m: ctx.log(f"trial {spec.index}: {m}"))
        ctx.log(f"search ended: {search.stop_reason} after {len(search.results)} trial(s) in {search.seconds:.1f} s")
        runs = len(search.results)
        metrics = {
            "trials": float(runs),
            "failed_trials": float(sum(r.failed for r in search.results)),
            "faulty_valid_acc": faulty_acc,
            "search_seconds": time.monotonic() - started,
            "trial_workers": float(engine.workers),
            "samples_spent": float(search.spent_cost),
        }
        if search.results:
            first = search.results[0]
            metrics["first_valid_acc"] = float(first.score) if first.score is not None else 0.0
        best = search.best
        if best is None:
            return Outcome(model=None, metrics=metrics,
                           message=f"no recipe produced a usable model in {runs} trial(s)",
                           diagnosis=Diagnosis(summary=f"{runs} trial(s), none usable"))
        metrics["best_valid_acc"] = float(best.score)
        metrics["best_trial"] = float(best.spec.index)
        from fixbench.zoo import Recipe

        best_recipe = Recipe.from_dict(best.spec.config["recipe"])
        changes = recipe_changes(base, best_recipe)
        if best.score <= faulty_acc + p["min_improvement"]:
            return Outcome(model=None, metrics=metrics,
                           message=(f"no recipe beat the faulty model on validation: best {best.score:.4f} "
                                    f"(trial {best.spec.index}) vs {faulty_acc:.4f}"),
                           diagnosis=Diagnosis(summary=f"best of {runs} trial(s) did not beat the faulty recipe"))
        if best.payload is None:
            # Trials run on Ray hand back scores only: retrain the winner here (same seed, one thread:
            # the same model) to get the module that is exported.
            rerun = engine.materialise(trial_fn, data, best.spec)
            if rerun.payload is None or rerun.score != best.score:
                ctx.log(f"warning: retraining trial {best.spec.index} gave valid acc {rerun.score} "
                        f"instead of {best.score}")
            if rerun.payload is None:
                return Outcome(model=None, metrics=metrics,
                               message=f"retraining the best trial {best.spec.index} gave no model ({rerun.status})",
                               diagnosis=Diagnosis(summary="the best trial could not be reproduced"))
            best = rerun
        example = torch.from_numpy(np.ascontiguousarray(valid_split.x[:1], dtype=np.float32))
        model_bytes = ctx.export(best.payload.module, example)
        if signature(load_model(model_bytes)) != signature(ctx.model):
            raise RuntimeError(f"the retrained model's signature {signature(load_model(model_bytes))} differs "
                               f"from the faulty model's {signature(ctx.model)}")
        summary = (f"trial {best.spec.index} of {runs}: {describe_changes(changes)}; valid acc "
                   f"{faulty_acc:.4f} -> {metrics['best_valid_acc']:.4f}")
        return Outcome(model=model_bytes, metrics=metrics, message=summary,
                       diagnosis=Diagnosis(recipe_changes=changes, repaired_recipe=best_recipe, summary=summary))


# ---- helpers (shared with the services' tests) -----------------------------------------------
def input_mismatch(model, input_shape: tuple[int, ...]) -> str | None:
    """Why a model retrained on inputs of `input_shape` could not replace `model`, or None."""
    inputs, outputs = signature(model)
    if len(inputs) != 1 or len(outputs) < 1:
        return (f"the faulty model has {len(inputs)} input(s) and {len(outputs)} output(s); the zoo trains "
                "single-input classifiers")
    dims = inputs[0][1][1:]
    if len(dims) != len(input_shape) or any(d not in (-1, s) for d, s in zip(dims, input_shape, strict=True)):
        return f"the faulty model takes inputs of shape {list(dims)}, but the data holds inputs of shape {list(input_shape)}"
    return None


def num_classes(ctx) -> int | None:
    """The faulty model's class count (its output width), so a retrained output matches it."""
    out_dims = signature(ctx.model)[1][0][1]
    if out_dims and out_dims[-1] > 0:
        return int(out_dims[-1])
    return int(ctx.job.data.num_classes) or None


def recipe_changes(base, repaired) -> list[RecipeChange]:
    return [RecipeChange(field, _jsonable(old), _jsonable(new)) for field, old, new in base.diff(repaired)]


def describe_changes(changes: list[RecipeChange]) -> str:
    return ", ".join(f"{c.field} {_short(c.old)} -> {_short(c.new)}" for c in changes) or "no field changed"


def trial_record(base, result: TrialResult) -> dict[str, Any]:
    """One trial as a log line: enough to replay it (changed fields + seed) and judge it."""
    from fixbench.zoo import Recipe

    recipe = Recipe.from_dict(result.spec.config["recipe"])
    return {
        "index": result.spec.index,
        "seed": result.spec.seed,
        "tag": dict(result.spec.tag),
        "changes": {c.field: c.new for c in recipe_changes(base, recipe)},
        "valid_acc": result.score,
        "status": result.status,
        "seconds": round(result.seconds, 3),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "items"):
        return dict(value)
    return value


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _seconds(value: float | None) -> str:
    return "none" if value is None or not math.isfinite(value) else f"{value:.1f} s"
