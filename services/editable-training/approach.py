"""editable-training: Editable Training (A. Sinitsin, V. Plokhotnyuk, D. Pyrkin, S. Popov,
A. Babenko, "Editable Neural Networks", ICLR 2020). Meta-trains the faulty model so that a
few gradient steps on a mistake fix it while a locality loss keeps its other predictions,
then edits it on the failing repair inputs one after the other with the paper's
gradient-descent editor."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import editable_core as core  # noqa: E402

from fixbench.sdk import Approach, Diagnosis, Outcome, Param, ParamError, serve  # noqa: E402
from fixbench.sdk.torch_helpers import accuracy, classification_loss, outputs_are_probabilities  # noqa: E402

# The official code's settings (xtinkt/editable: EditableTrainer stability_coeff and
# editability_coeff 0.01, gradient-descent editor lr 0.01 at most 10 steps during training
# and editing, Adam, batch 128) with the paper's ImageNet-style fine-tuning of a trained model;
# `meta_steps` there is "until convergence", taken as 10 epochs of the MNIST split.
PRESETS = {
    "default": {},
    "paper": {"meta_steps": 4000, "batch_size": 128, "meta_lr": 1e-3, "editor_lr": 1e-2, "meta_edit_steps": 10,
              "edit_max_steps": 10, "c_edit": 0.01, "c_loc": 0.01, "edits_per_step": 1},
}


class EditableTraining(Approach):
    name = "editable-training"
    version = "1.0.0"
    level = "model"
    paper = ("A. Sinitsin, V. Plokhotnyuk, D. Pyrkin, S. Popov, A. Babenko. Editable Neural Networks. "
             "ICLR 2020. arXiv:2004.00345")
    summary = ("Editable Training: meta-train so that a few SGD steps on a mistake fix it (editability loss) "
               "without moving other predictions (locality loss), then edit the failing inputs one by one.")
    needs = ("repair_data", "training_data", "validation_data")
    fault_families = ("misclassification",)
    params = (
        Param("preset", str, "default", "default (scaled for minutes on 2 CPU cores) or paper (the published settings)"),
        Param("meta_steps", int, 150, "editable-training mini-batches (0: edit the faulty model as it is)"),
        Param("batch_size", int, 64, "editable-training mini-batch size"),
        Param("meta_lr", float, 1e-3, "Adam learning rate of editable training"),
        Param("editor_lr", float, 1e-3, "step size α of the gradient-descent editor"),
        Param("meta_edit_steps", int, 5, "editor steps k unrolled in the graph during editable training"),
        Param("edit_max_steps", int, 30, "most editor steps per edit of a failing input"),
        Param("c_edit", float, 0.1, "weight of the editability loss"),
        Param("c_loc", float, 1.0, "weight of the locality loss"),
        Param("edits_per_step", int, 1, "sampled edits per editable-training mini-batch"),
    )

    @classmethod
    def validate_params(cls, params):
        if params["preset"] not in PRESETS:
            raise ParamError(f"parameter 'preset' must be one of {', '.join(PRESETS)}, not {params['preset']!r}")
        for name in ("batch_size", "meta_edit_steps", "edit_max_steps", "edits_per_step"):
            if params[name] < 1:
                raise ParamError(f"parameter {name!r} must be at least 1")
        if params["meta_steps"] < 0:
            raise ParamError("parameter 'meta_steps' must not be negative")
        for name in ("meta_lr", "editor_lr"):
            if not params[name] > 0:
                raise ParamError(f"parameter {name!r} must be positive")
        for name in ("c_edit", "c_loc"):
            if params[name] < 0:
                raise ParamError(f"parameter {name!r} must not be negative")

    @classmethod
    def resolve_params(cls, given):
        values = super().resolve_params(given)
        for key, value in PRESETS[values["preset"]].items():
            if key not in given:
                values[key] = value
        return values

    def check(self, ctx):
        classes = int(ctx.job.data.num_classes)
        if classes and classes < 2:
            return "editable training samples edits with a different label: it needs at least 2 classes"
        return None

    def repair(self, ctx):
        import torch

        p = ctx.params
        repair, train, valid = ctx.split("repair"), ctx.split("train"), ctx.split("valid")
        if not ctx.failing_mask("repair").any():
            return Outcome(model=None, message="the faulty model gets every repair input right: nothing to fix")
        model = ctx.torch_model()
        probs = outputs_are_probabilities(ctx.original_predictor.scores(valid.x[:64]))
        num_classes = int(ctx.job.data.num_classes) or int(max(train.y.max(), repair.y.max(), valid.y.max()) + 1)
        torch.manual_seed(ctx.seed)
        base_acc = accuracy(model, valid.x, valid.y)
        before = {n: t.detach().clone() for n, t in model.named_parameters()}
        s = core.MetaSettings(steps=p["meta_steps"], batch_size=p["batch_size"], lr=p["meta_lr"],
                              editor_lr=p["editor_lr"], edit_steps=p["meta_edit_steps"], c_edit=p["c_edit"],
                              c_loc=p["c_loc"], edits_per_step=p["edits_per_step"])
        every = max(1, s.steps // 20)

        def meta_progress(step, m):
            # Out of budget the loops stop by themselves (edits done so far are kept).
            if not ctx.should_stop() and (step % every == 0 or step == s.steps):
                ctx.progress(0.7 * step / s.steps, "editable-training",
                             f"step {step}/{s.steps}: main {m['main_loss']:.4f} edit {m['edit_loss']:.4f} "
                             f"locality {m['locality_loss']:.4f}", **m)

        meta = {}
        if s.steps:
            ctx.log(f"editable training for {s.steps} mini-batches of {s.batch_size} (k={s.edit_steps})")
            meta = core.meta_train(model, train.x, train.y, num_classes, s, probs, ctx.rng,
                                   classification_loss(probs), meta_progress, ctx.should_stop)
        meta_acc = accuracy(model, valid.x, valid.y)
        with torch.no_grad():
            wrong = np.flatnonzero(model(torch.from_numpy(repair.x)).argmax(dim=1).numpy() != repair.y)
        ctx.log(f"valid acc {base_acc:.4f} -> {meta_acc:.4f} after editable training; editing {len(wrong)} inputs")
        n_edit = max(1, len(wrong))

        def edit_progress(i, n, r):
            if not ctx.should_stop() and (i % max(1, n // 20) == 0 or i == n - 1):
                ctx.progress(0.7 + 0.3 * (i + 1) / n_edit, "edit",
                             f"edit {i + 1}/{n}: {'held' if r.success else 'failed'} after {r.steps} steps")

        results, _ = core.apply_edits(model, repair.x[wrong], repair.y[wrong], p["editor_lr"], p["edit_max_steps"],
                                      probs, edit_progress, ctx.should_stop)
        final_acc = accuracy(model, valid.x, valid.y)
        metrics = {"base_valid_acc": base_acc, "meta_valid_acc": meta_acc, "valid_acc": final_acc,
                   "edits": float(len(results)), "edits_held": float(sum(r.success for r in results)),
                   "mean_edit_steps": float(np.mean([r.steps for r in results])) if results else 0.0,
                   **{f"meta_{k}": float(v) for k, v in meta.items()}}
        changes = sorted(((float((t.detach() - before[n]).norm() / (before[n].norm() + 1e-12)), n)
                          for n, t in model.named_parameters()), reverse=True)
        diagnosis = Diagnosis(
            layers=[n for _, n in changes],
            summary=(f"{int(metrics['edits_held'])}/{len(results)} edits held; valid acc {base_acc:.4f} -> "
                     f"{meta_acc:.4f} (editable training) -> {final_acc:.4f} (edited); largest relative change in "
                     + ", ".join(f"{n} ({d:.3g})" for d, n in changes[:3])),
        )
        message = (f"the budget ran out after {len(results)} of {len(wrong)} edits" if ctx.should_stop() else "")
        return Outcome(model=ctx.export(model), metrics=metrics, diagnosis=diagnosis, message=message)


if __name__ == "__main__":
    serve(EditableTraining)
