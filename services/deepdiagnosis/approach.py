"""deepdiagnosis: DeepDiagnosis (Wardat et al., ICSE 2022) as a fault localiser for training
recipes. Trains the faulty recipe once under DeepDiagnosis' checks (numerical errors, invalid
loss, out-of-range output, dead nodes, saturated activations, unchanged tensors, loss not
decreasing, accuracy not increasing, vanishing gradient), walks its decision tree from each
symptom to an actionable fix, and returns the fixes as recipe fields ranked in the diagnosis.
It returns no model: it localises, it does not repair."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import diagnosis_core as core  # noqa: E402

from fixbench.sdk import Approach, BudgetExceeded, Diagnosis, Outcome, Param, RecipeChange, Unadaptable, serve  # noqa: E402

RECIPE_FAMILY = "training_recipe"
PRESETS = {
    # The zoo's recipes train for 4-10 epochs: windows of 3 epochs.
    "default": {"window": 3, "accuracy_window": 3},
    # The original callback's N = 5 (forward tensors, loss) and FRQ = 20 (accuracy).
    "paper": {"window": 5, "accuracy_window": 20},
}


class DeepDiagnosis(Approach):
    name = "deepdiagnosis"
    version = "1.0.0"
    level = "recipe"
    paper = (
        "M. Wardat, B. D. Cruz, W. Le, H. Rajan. DeepDiagnosis: Automatically Diagnosing Faults and "
        "Recommending Actionable Fixes in Deep Learning Programs. ICSE 2022. doi:10.1145/3510003.3510071"
    )
    summary = "Symptom checks during training and a decision tree from symptom to fix, ranked as recipe fields."
    needs = ("training_data", "validation_data", "training_recipe")
    fault_families = ("training_recipe",)
    params = (
        Param("preset", str, "default", "default or paper: fills window and accuracy_window unless they are given"),
        Param("window", int, 3, "epochs over which an unchanged forward tensor or loss is a symptom (original N)"),
        Param("accuracy_window", int, 3, "epochs over which an unchanged accuracy is a symptom (original FRQ)"),
    )

    @classmethod
    def validate_params(cls, params):
        if params["preset"] not in PRESETS:
            raise ValueError(f"parameter preset must be one of {sorted(PRESETS)}, got {params['preset']!r}")
        for name in ("window", "accuracy_window"):
            if params[name] < 2:
                raise ValueError(f"parameter {name} must be >= 2, got {params[name]}")

    def check(self, ctx) -> str | None:
        if ctx.job.fault_family != RECIPE_FAMILY:
            return (f"{self.name} diagnoses training recipes; this job's fault family is "
                    f"{ctx.job.fault_family or 'unset'!r}, not {RECIPE_FAMILY!r}")
        try:
            recipe = ctx.recipe
        except ValueError as exc:
            return f"the job's training recipe is invalid, so there is no training to diagnose: {exc}"
        if recipe is None:
            return f"{self.name} needs the faulty model's training recipe, and this job carries none"
        return None

    def repair(self, ctx) -> Outcome:
        from fixbench.sdk.recipes import TrainingDiverged, train

        p = dict(ctx.params)
        given = set(ctx.job.params.fields) if ctx.job.HasField("params") else set()
        p.update({k: v for k, v in PRESETS[p["preset"]].items() if k not in given})
        recipe = ctx.recipe
        if recipe is None:
            raise Unadaptable(f"{self.name} needs the faulty model's training recipe, and this job carries none")
        train_split, valid_split = ctx.split("train"), ctx.split("valid")
        num_classes = int(ctx.job.data.num_classes) or None
        diagnoser = core.Diagnoser(recipe, inputs_normalised=recipe.normalize_input or _in_unit_range(train_split.x),
                                   window=p["window"], accuracy_window=p["accuracy_window"])
        started = time.monotonic()

        def on_epoch(state):
            stop = diagnoser(state)
            try:
                ctx.progress(state.epoch / state.total_epochs, "diagnose",
                             f"epoch {state.epoch}: {len(diagnoser.symptoms)} symptom(s)")
            except BudgetExceeded:
                return True  # diagnose what was seen so far
            return stop

        try:
            train(recipe, (train_split.x, train_split.y), (valid_split.x, valid_split.y),
                  seed=int(ctx.rng.integers(2**31 - 1)), deadline=ctx.deadline, num_classes=num_classes,
                  on_epoch=on_epoch)
        except TrainingDiverged:
            pass  # the symptoms up to the divergence are what is diagnosed
        ranked = diagnoser.ranked_fixes()
        for s in diagnoser.symptoms:
            ctx.log("symptom " + json.dumps({"symptom": s.name, "epoch": s.epoch, "layer": s.layer, "detail": s.detail}))
        changes = [RecipeChange(fld, _jsonable(getattr(recipe, fld)), core.suggested_value(fix, recipe))
                   for fix, fld, _ in ranked]
        first = diagnoser.symptoms[0] if diagnoser.symptoms else None
        summary = ("no symptom detected" if first is None else
                   f"first symptom: {core.SYMPTOMS[first.name]} at epoch {first.epoch}"
                   + (f", layer {first.layer}" if first.layer is not None else "")
                   + "; ranked fixes: " + ", ".join(f"{i + 1}. {fld} ({fix}, from {s.name})"
                                                    for i, (fix, fld, s) in enumerate(ranked)))
        metrics = {"symptoms": float(len(diagnoser.symptoms)), "suggested_fields": float(len(ranked)),
                   "diagnosis_seconds": time.monotonic() - started}
        return Outcome(model=None, not_repaired=True, metrics=metrics, message=summary,
                       diagnosis=Diagnosis(recipe_changes=changes, summary=summary))


def _in_unit_range(x) -> bool:
    """The original's test for normalised data: every input within [-1, 1]."""
    return bool(x.min() >= -1 and x.max() <= 1)


def _jsonable(value):
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "items"):
        return dict(value)
    return value


if __name__ == "__main__":
    serve(DeepDiagnosis)
