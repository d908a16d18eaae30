"""random-recipe: the random-search baseline of Kim et al., "Repairing DNN Architecture: Are We
There Yet?" (ICST 2023). Samples training recipes from the Kim et al. search space, retrains
each under the job's budget (wall seconds or a multiple of the faulty model's training time),
keeps the recipe with the best validation accuracy, and reports the recipe diff as its
diagnosis."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

# Run as `python services/random-recipe/approach.py` the script's folder is on sys.path; loaded
# by path (tests, tools) it is not, and the helpers live beside this file.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from random_search import (  # noqa: E402
    RandomProposer,
    TrialOutcome,
    describe_changes,
    outcome_of,
    recipe_changes,
    scored_accuracy,
    to_spec,
    trial_function,
)

from fixbench.sdk import Approach, BudgetExceeded, Diagnosis, Outcome, Param, Unadaptable, load_model, serve, signature  # noqa: E402
from fixbench.sdk.budget import sample_budget, trial_seconds_cap  # noqa: E402
from fixbench.sdk.trials import RecipeData, TrialBudget, TrialEngine  # noqa: E402

RECIPE_FAMILY = "training_recipe"


class RandomRecipe(Approach):
    name = "random-recipe"
    version = "1.0.0"
    level = "recipe"
    paper = (
        "J. Kim, N. Humbatova, G. Jahangirova, P. Tonella, S. Yoo. Repairing DNN Architecture: "
        "Are We There Yet? ICST 2023. doi:10.1109/ICST57152.2023.00030"
    )
    summary = (
        "Random search over the Kim et al. training-recipe space: retrain with sampled recipes "
        "within the budget, keep the best on validation, report the recipe diff."
    )
    needs = ("training_data", "validation_data", "training_recipe")
    fault_families = ("training_recipe",)
    params = (
        Param(
            "reference_trial",
            bool,
            False,
            "first retrain the faulty recipe with a fresh seed; sampled recipes must then beat it too, "
            "so that a lucky seed is not reported as a repair (costs one trial)",
        ),
        Param(
            "trial_time_multiple",
            float,
            5.0,
            "cap on one trial's wall time, as a multiple of the faulty model's training time, so that one "
            "slow sampled recipe cannot spend the whole budget (0: only the job budget applies)",
        ),
        Param(
            "min_improvement",
            float,
            0.0,
            "validation-accuracy margin (a fraction, 0-1) by which a recipe must beat the faulty model",
        ),
    )

    def check(self, ctx) -> str | None:
        family = ctx.job.fault_family
        if family != RECIPE_FAMILY:
            return (
                f"{self.name} repairs training-recipe faults by retraining with other recipes; this job's "
                f"fault family is {family or 'unset'!r}, not {RECIPE_FAMILY!r}"
            )
        try:
            recipe = ctx.recipe
        except ValueError as exc:  # RecipeError: a field outside the recipe's allowed values
            return f"the job's training recipe is invalid, so there is nothing to search from: {exc}"
        if recipe is None:
            return f"{self.name} needs the faulty model's training recipe, and this job carries none"
        declared = tuple(int(d) for d in ctx.job.data.input_shape)
        return _input_mismatch(ctx.model, declared) if declared else None

    def repair(self, ctx) -> Outcome:
        import torch

        p = ctx.params
        if not 0.0 <= p["min_improvement"] < 1.0:
            raise ValueError(f"parameter min_improvement must lie in [0, 1), got {p['min_improvement']}")
        if p["trial_time_multiple"] < 0:
            raise ValueError(f"parameter trial_time_multiple must be >= 0, got {p['trial_time_multiple']}")
        base = ctx.recipe
        if base is None:
            raise Unadaptable(f"{self.name} needs the faulty model's training recipe, and this job carries none")
        train_split, valid_split = ctx.split("train"), ctx.split("valid")
        mismatch = _input_mismatch(ctx.model, train_split.x.shape[1:])
        if mismatch:
            raise Unadaptable(mismatch)
        num_classes = _num_classes(ctx)

        faulty_acc = scored_accuracy(ctx.original_predictor.scores(valid_split.x), valid_split.y)
        max_trials = int(ctx.job.budget.max_trials)
        # Under a sample budget (the shipped studies') trials are bounded by their planned
        # samples and never cut by the clock, so a seed gives the same trials on any machine.
        trial_cap = trial_seconds_cap(ctx, p["trial_time_multiple"]) or math.inf
        max_samples = sample_budget(ctx)
        ctx.log(
            f"random recipe search from {json.dumps(base.to_dict(), default=str)}; faulty valid acc "
            f"{faulty_acc:.4f}; budget {_seconds(ctx.budget_seconds)}, max trials {max_trials or 'none'}, "
            f"per-trial cap {_seconds(trial_cap)}, training samples {max_samples or 'no cap'}"
        )

        engine = TrialEngine.from_env()
        ctx.log(f"trials: {engine.describe()}")
        started = time.monotonic()
        remaining = ctx.remaining()
        budget = TrialBudget(
            max_cost=max_samples,
            deadline_wall=time.time() + remaining if math.isfinite(remaining) else None,
            trial_seconds=trial_cap if math.isfinite(trial_cap) else None,
            max_trials=max_trials,
        )
        proposer = RandomProposer(base, ctx.rng, len(train_split.y), reference=p["reference_trial"],
                                  round_size=engine.workers)
        data = RecipeData((train_split.x, train_split.y), (valid_split.x, valid_split.y), num_classes)
        state: dict = {"best": None}

        def on_result(result, search) -> None:
            outcome = outcome_of(result)
            ctx.log("trial " + json.dumps(_trial_record(base, outcome), default=str))
            best = state["best"]
            # Best by (score, lowest index): the same winner whatever order parallel trials end in.
            if not outcome.trial.reference and not outcome.failed and (
                best is None or (outcome.valid_accuracy, -outcome.trial.index) > (best.valid_accuracy, -best.trial.index)
            ):
                state["best"] = outcome
            self._report(ctx, len(search.results), max_trials, started, state["best"])

        search = engine.run(proposer, trial_function, data, budget, should_stop=ctx.should_stop, on_result=on_result)
        runs = len(search.results)
        failed = sum(r.failed for r in search.results)
        reference = [r for r in search.results if r.spec.tag.get("reference")]
        reference_acc = reference[0].score if reference else None
        best: TrialOutcome | None = state["best"]
        if best is not None and best.result is None:
            # Trials run on Ray hand back scores only: retrain the winner here (same seed, one
            # thread: the same model) to get the module that is exported.
            best = outcome_of(engine.materialise(trial_function, data, to_spec(best.trial, len(train_split.y))))
        ctx.log(f"search ended: {search.stop_reason} after {runs} trial(s) in {search.seconds:.1f} s")

        bar = max(faulty_acc, reference_acc or 0.0)
        metrics = {
            "trials": float(runs),
            "failed_trials": float(failed),
            "faulty_valid_acc": faulty_acc,
            "search_seconds": time.monotonic() - started,
        }
        if reference_acc is not None:
            metrics["reference_valid_acc"] = reference_acc
        if best is None:
            return Outcome(
                model=None,
                metrics=metrics,
                message=f"no sampled recipe produced a usable model in {runs} trial(s)",
                diagnosis=Diagnosis(summary=f"{runs} trial(s), none usable"),
            )
        metrics["best_valid_acc"] = best.valid_accuracy
        metrics["best_trial"] = float(best.trial.index)
        changes = recipe_changes(base, best.trial.recipe)
        if best.valid_accuracy <= bar + p["min_improvement"]:
            what = "the faulty model" if reference_acc is None else "the faulty model or its retrained recipe"
            return Outcome(
                model=None,
                metrics=metrics,
                message=(
                    f"no sampled recipe beat {what} on validation: best {best.valid_accuracy:.4f} "
                    f"(trial {best.trial.index}) vs {bar:.4f}"
                ),
                diagnosis=Diagnosis(summary=f"best of {runs} trial(s) did not beat the faulty recipe"),
            )

        example = torch.from_numpy(np.ascontiguousarray(valid_split.x[:1], dtype=np.float32))
        # Re-exported through the SDK so that the input/output names are the faulty model's.
        model_bytes = ctx.export(best.result.module, example)
        if signature(load_model(model_bytes)) != signature(ctx.model):
            raise RuntimeError(
                f"the retrained model's signature {signature(load_model(model_bytes))} differs from "
                f"the faulty model's {signature(ctx.model)}"
            )
        summary = (
            f"trial {best.trial.index} of {runs}: {describe_changes(changes)}; valid acc "
            f"{faulty_acc:.4f} -> {best.valid_accuracy:.4f}"
        )
        return Outcome(
            model=model_bytes,
            metrics=metrics,
            message=summary,
            diagnosis=Diagnosis(recipe_changes=changes, repaired_recipe=best.trial.recipe, summary=summary),
        )

    @staticmethod
    def _report(ctx, runs: int, max_trials: int, started: float, best: TrialOutcome | None) -> None:
        budget = ctx.budget_seconds or 0.0
        fraction = max(
            runs / max_trials if max_trials else 0.0, (time.monotonic() - started) / budget if budget > 0 else 0.0
        )
        best_acc = {} if best is None else {"best_valid_acc": best.valid_accuracy}
        try:
            ctx.progress(min(fraction, 1.0), "search", f"{runs} trial(s) run", **best_acc)
        except BudgetExceeded:
            # The budget ran out during the last trial: the loop stops and returns its best so far.
            pass


def _input_mismatch(model, input_shape: tuple[int, ...]) -> str | None:
    """Why a model retrained on inputs of `input_shape` could not replace `model`, or None: the
    repaired model must take exactly the input the faulty one takes."""
    inputs, outputs = signature(model)
    if len(inputs) != 1 or len(outputs) < 1:
        return f"the faulty model has {len(inputs)} input(s) and {len(outputs)} output(s); the zoo trains single-input classifiers"
    dims = inputs[0][1][1:]
    if len(dims) != len(input_shape) or any(d not in (-1, s) for d, s in zip(dims, input_shape, strict=True)):
        return f"the faulty model takes inputs of shape {list(dims)}, but the data holds inputs of shape {list(input_shape)}"
    return None


def _num_classes(ctx) -> int | None:
    """The faulty model's class count (its output width), so the retrained output matches it
    even when a split lacks the last class."""
    out_dims = signature(ctx.model)[1][0][1]
    if out_dims and out_dims[-1] > 0:
        return int(out_dims[-1])
    return int(ctx.job.data.num_classes) or None


def _trial_record(base, outcome: TrialOutcome) -> dict:
    """One trial as a log line: enough to replay it (changed fields + seed) and judge it."""
    trial = outcome.trial
    return {
        "index": trial.index,
        "reference": trial.reference,
        "seed": trial.seed,
        "changes": {c.field: c.new for c in recipe_changes(base, trial.recipe)},
        "valid_acc": outcome.valid_accuracy,
        "status": outcome.status,
        "seconds": round(outcome.seconds, 3),
    }


def _seconds(value: float | None) -> str:
    return "none" if value is None or not math.isfinite(value) else f"{value:.1f} s"


if __name__ == "__main__":
    serve(RandomRecipe)
