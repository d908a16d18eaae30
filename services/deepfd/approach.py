"""deepfd: DeepFD (Cao et al., ICSE 2022) as a fault localiser for training recipes. Trains the
faulty recipe once under DeepFD's feature monitor, summarises the run into DeepFD's features,
classifies the fault type with DeepFD's five labels (optimiser, learning rate, activation,
loss, epochs) and returns the recipe fields those labels name, ranked by the classifiers'
probability, in the diagnosis. It returns no model: it localises, it does not repair."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import deepfd_classifier as clf  # noqa: E402
import deepfd_features as feats  # noqa: E402

from fixbench.sdk import Approach, BudgetExceeded, Diagnosis, Outcome, Param, RecipeChange, Unadaptable, serve  # noqa: E402

RECIPE_FAMILY = "training_recipe"


class DeepFD(Approach):
    name = "deepfd"
    version = "1.0.0"
    level = "recipe"
    paper = (
        "J. Cao, M. Li, X. Chen, M. Wen, Y. Tian, B. Wu, S.-C. Cheung. DeepFD: Automated Fault Diagnosis "
        "and Localization for Deep Learning Programs. ICSE 2022. doi:10.1145/3510003.3510099"
    )
    summary = "Classifies the fault type from features of the training run (five labels) and ranks the recipe fields."
    needs = ("training_data", "validation_data", "training_recipe")
    fault_families = ("training_recipe",)
    params = (
        Param("preset", str, "default", "default or paper: the classifiers' seed and threshold are the same in both"),
        Param("classifier_seed", int, 0, "seed of the decision tree and random forest, fitted once per service process from the shipped table"),
        Param("threshold", float, 0.5, "probability (0-1) above which a label counts as diagnosed (the summary's verdict)"),
    )
    _classifier: clf.FaultClassifier | None = None
    _classifier_seed: int | None = None

    @classmethod
    def validate_params(cls, params):
        if params["preset"] not in ("default", "paper"):
            raise ValueError(f"parameter preset must be default or paper, got {params['preset']!r}")
        if not 0.0 < params["threshold"] < 1.0:
            raise ValueError(f"parameter threshold must lie in (0, 1), got {params['threshold']}")

    @classmethod
    def classifier(cls, seed: int) -> clf.FaultClassifier:
        """Fitted once per seed from the shipped feature table (deterministic, no pickle)."""
        if cls._classifier is None or cls._classifier_seed != seed:
            table = clf.load_table()
            cls._classifier = clf.FaultClassifier(seed).fit(table.x, table.y)
            cls._classifier_seed = seed
        return cls._classifier

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

        p = ctx.params
        recipe = ctx.recipe
        if recipe is None:
            raise Unadaptable(f"{self.name} needs the faulty model's training recipe, and this job carries none")
        started = time.monotonic()
        ctx.progress(0.0, "classifier", "fitting the classifiers on the feature table")
        model = self.classifier(p["classifier_seed"])
        train_split, valid_split = ctx.split("train"), ctx.split("valid")
        monitor = feats.FeatureMonitor(recipe.epochs)

        def on_epoch(state):
            monitor(state)
            try:
                ctx.progress(state.epoch / state.total_epochs, "features", f"epoch {state.epoch}")
            except BudgetExceeded:
                return True  # classify the epochs seen so far
            return False

        try:
            train(recipe, (train_split.x, train_split.y), (valid_split.x, valid_split.y),
                  seed=int(ctx.rng.integers(2**31 - 1)), deadline=ctx.deadline,
                  num_classes=int(ctx.job.data.num_classes) or None, on_epoch=on_epoch)
        except TrainingDiverged:
            pass  # the epochs up to the divergence carry the features
        if not monitor.rows:
            raise Unadaptable("the faulty recipe trained no full epoch within the budget, so it has no DeepFD features")
        probs = model.probabilities(feats.feature_vector(monitor.rows))[0]
        labels = clf.ranked_labels(probs)
        ranked = clf.ranked_fields(labels, recipe)
        ctx.log("deepfd " + json.dumps({"probabilities": dict(labels), "epochs": len(monitor.rows)}))
        diagnosed = [lb for lb, pr in labels if pr >= p["threshold"]]
        changes = [RecipeChange(f, _jsonable(getattr(recipe, f)), None) for f, _, _ in ranked]
        summary = (f"DeepFD fault types: {', '.join(diagnosed) or 'none above the threshold'}; ranked "
                   + ", ".join(f"{lb} {pr:.2f}" for lb, pr in labels)
                   + "; fields: " + ", ".join(f for f, _, _ in ranked))
        metrics = {f"p_{lb}": pr for lb, pr in labels}
        metrics["diagnosis_seconds"] = time.monotonic() - started
        return Outcome(model=None, not_repaired=True, metrics=metrics, message=summary,
                       diagnosis=Diagnosis(recipe_changes=changes, summary=summary))


def _jsonable(value):
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "items"):
        return dict(value)
    return value


if __name__ == "__main__":
    serve(DeepFD)
