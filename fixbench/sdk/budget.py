"""Budgets every recipe-level service spends the same way: what a job's budget is, and the
trial accounting of a search under a machine-independent budget.

A job's budget (`RepairJob.budget`) is one of
- `training_samples_multiple` (the default of the shipped studies): a multiple of the training
  samples the faulty model's training saw (its recipe's epochs × training-set size,
  `RepairJob.faulty_training_samples`). It counts work, not seconds, so the same job with the
  same seed runs the same trials on any machine, loaded or idle;
- `wall_seconds`: seconds of wall time, an explicit choice whose results depend on the machine;
- `training_time_multiple`: a multiple of the faulty model's *measured* training time (Kim et
  al.'s wording); as machine-dependent as wall time.

Whatever the kind, the SDK's wall-clock deadline (`ctx.deadline`, `ctx.should_stop()`) is the
safety net: for a sample budget it is `FIXBENCH_DEFAULT_BUDGET` seconds (1 h by default).

Search services (random-recipe, HEBO, BOHB: the trial engine of `fixbench.sdk.trials`) all
turn the job's budget into the engine's budget the same way:

    TrialBudget(max_cost=sample_budget(ctx),                 # None unless a sample budget
                deadline_wall=time.time() + ctx.remaining(),  # the wall clock (a cap for samples)
                trial_seconds=trial_seconds_cap(ctx, k),      # None under a sample budget
                max_trials=ctx.job.budget.max_trials)

The engine admits trials in index order by their planned cost (samples seen), known before a
trial runs, so under a sample budget the trials run never depend on the speed of the machine.
"""

from __future__ import annotations

import os
from typing import Any

# Wall-clock cap of a job whose budget is not in seconds (or that sets none), so that a runaway
# approach cannot hold a worker forever.
DEFAULT_BUDGET_SECONDS = float(os.environ.get("FIXBENCH_DEFAULT_BUDGET", "3600"))


class BudgetError(ValueError):
    """A job whose budget cannot be worked out; the message says which field is missing."""


def budget_kind(job: Any) -> str:
    """"samples", "wall", "training_time" or "none" for a RepairJob's budget."""
    b = job.budget
    if b.training_samples_multiple > 0:
        return "samples"
    if b.wall_seconds > 0:
        return "wall"
    if b.training_time_multiple > 0:
        return "training_time"
    return "none"


def budget_seconds(job: Any) -> float:
    """The job's wall-clock limit: the wall seconds, the multiple of the faulty model's
    training time, or (sample budgets, no budget) the safety cap."""
    kind, b = budget_kind(job), job.budget
    if kind == "wall":
        return float(b.wall_seconds)
    if kind == "training_time":
        if job.faulty_training_seconds <= 0:
            raise BudgetError("the budget is a multiple of the faulty model's training time, but the job gives no training time")
        return float(b.training_time_multiple * job.faulty_training_seconds)
    return DEFAULT_BUDGET_SECONDS


def faulty_training_samples(job: Any, train_size: int | None = None) -> int:
    """Samples the faulty model's training saw: the job's `faulty_training_samples`, else
    its recipe's epochs × `train_size` (the training split's length), else 0."""
    if job.faulty_training_samples > 0:
        return int(job.faulty_training_samples)
    if train_size and job.HasField("recipe") and job.recipe.epochs > 0:
        return int(job.recipe.epochs) * int(train_size)
    return 0


def sample_budget(ctx: Any) -> float | None:
    """The job's budget in training samples (`budget.training_samples_multiple` × the faulty
    training's samples), or None when the budget is not a sample budget. It is the `max_cost`
    of `fixbench.sdk.trials.TrialBudget`, whose recipe trials cost their planned samples seen
    (epochs × training samples, `trials.recipe_cost`). The count comes from the job, else from
    its recipe and the training split (fetched)."""
    job = ctx.job
    if budget_kind(job) != "samples":
        return None
    train_size = None
    if job.faulty_training_samples <= 0 and ctx.has_split("train"):
        train_size = len(ctx.split("train").y)
    samples = faulty_training_samples(job, train_size)
    if samples <= 0:
        raise BudgetError("the budget is a multiple of the faulty model's training samples, but the job gives "
                          "neither faulty_training_samples nor a recipe and a training split to count them from")
    return float(job.budget.training_samples_multiple) * samples


def trial_seconds_cap(ctx: Any, multiple: float) -> float | None:
    """A per-trial wall-time cap of `multiple` × the faulty model's training time, or None:
    under a sample budget no trial is cut by the clock (the cut would depend on the machine;
    a trial's planned cost already bounds it), nor when `multiple` or the training time is 0."""
    if budget_kind(ctx.job) == "samples" or multiple <= 0 or ctx.job.faulty_training_seconds <= 0:
        return None
    return float(multiple) * float(ctx.job.faulty_training_seconds)


__all__ = ["BudgetError", "DEFAULT_BUDGET_SECONDS", "budget_kind", "budget_seconds", "faulty_training_samples",
           "sample_budget", "trial_seconds_cap"]
