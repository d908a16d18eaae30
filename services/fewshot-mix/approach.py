"""fewshot-mix: few-shot guided mix (X. Ren, B. Yu, H. Qi, F. Juefei-Xu, Z. Li, W. Xue, L. Ma,
J. Zhao, "Few-Shot Guided Mix for DNN Repairing", ICSME 2020). The few failure samples of the
repair split guide a mixup-style augmentation of the training data (failures mixed with
training samples of their own class or of any class, soft labels), and the model is retrained
on the mix; the epoch with the best validation accuracy is kept. See guided_mix.py for the
exact variant."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import guided_mix as gm  # noqa: E402

from fixbench.sdk import Approach, Diagnosis, Outcome, Param, ParamError, serve  # noqa: E402
from fixbench.sdk.torch_helpers import accuracy, outputs_are_probabilities  # noqa: E402

# No published code and no settings table could be retrieved here; the "paper" preset is
# the usual mixup setting (α = 1, Zhang et al. 2018) on the whole training split with the
# retraining length of a fine-tuning run. README says so.
PRESETS = {
    "default": {},
    "paper": {"alpha": 1.0, "mix_ratio": 1.0, "train_samples": 10**9, "epochs": 20, "learning_rate": 1e-4,
              "batch_size": 128, "expand": 10, "patience": 5},
}


class FewshotMix(Approach):
    name = "fewshot-mix"
    version = "1.0.0"
    level = "model"
    paper = ("X. Ren, B. Yu, H. Qi, F. Juefei-Xu, Z. Li, W. Xue, L. Ma, J. Zhao. Few-Shot Guided Mix for DNN "
             "Repairing. ICSME 2020. doi:10.1109/ICSME46990.2020.00078")
    summary = ("Few-shot guided mix: expand the few failure samples, mix them with training samples "
               "(mixup, failure-weighted, target-class partners), retrain on the mix; best on validation.")
    needs = ("repair_data", "training_data", "validation_data")
    fault_families = ("misclassification",)
    params = (
        Param("preset", str, "default", "default (scaled for minutes on 2 CPU cores) or paper (the published settings)"),
        Param("alpha", float, 1.0, "Beta(α, α) of the mixing weight"),
        Param("same_class_prob", float, 0.5, "probability that a failure is mixed with a training sample of its own class"),
        Param("expand", int, 4, "jittered copies of each failure sample in the few-shot pool"),
        Param("shift", int, 2, "largest pixel shift of a jittered image copy"),
        Param("noise", float, 0.05, "noise (× feature spread) of a jittered copy of a non-image input"),
        Param("mix_ratio", float, 1.0, "mixed samples as a multiple of the clean training slice"),
        Param("train_samples", int, 2000, "clean training samples retrained on (and mixed with)"),
        Param("epochs", int, 8, "most retraining epochs"),
        Param("learning_rate", float, 5e-4, "Adam learning rate of the retraining"),
        Param("batch_size", int, 64, "retraining mini-batch size"),
        Param("patience", int, 3, "epochs without a validation improvement before stopping"),
    )

    @classmethod
    def validate_params(cls, params):
        if params["preset"] not in PRESETS:
            raise ParamError(f"parameter 'preset' must be one of {', '.join(PRESETS)}, not {params['preset']!r}")
        if not params["alpha"] > 0:
            raise ParamError("parameter 'alpha' must be positive")
        if not 0.0 <= params["same_class_prob"] <= 1.0:
            raise ParamError("parameter 'same_class_prob' must be in [0, 1]")
        for name in ("expand", "shift", "train_samples", "patience"):
            if params[name] < 0:
                raise ParamError(f"parameter {name!r} must not be negative")
        for name in ("epochs", "batch_size"):
            if params[name] < 1:
                raise ParamError(f"parameter {name!r} must be at least 1")
        for name in ("mix_ratio", "learning_rate"):
            if not params[name] > 0:
                raise ParamError(f"parameter {name!r} must be positive")
        if params["noise"] < 0:
            raise ParamError("parameter 'noise' must not be negative")

    @classmethod
    def resolve_params(cls, given):
        values = super().resolve_params(given)
        for key, value in PRESETS[values["preset"]].items():
            if key not in given:
                values[key] = value
        return values

    def repair(self, ctx):
        import torch

        p = ctx.params
        repair, train, valid = ctx.split("repair"), ctx.split("train"), ctx.split("valid")
        failing = ctx.failing_mask("repair")
        if not failing.any():
            return Outcome(model=None, message="the faulty model gets every repair input right: nothing to fix")
        num_classes = int(ctx.job.data.num_classes) or int(max(train.y.max(), repair.y.max(), valid.y.max()) + 1)
        torch.manual_seed(ctx.seed)
        model = ctx.torch_model()
        probs = outputs_are_probabilities(ctx.original_predictor.scores(valid.x[:64]))
        fx, fy = gm.expand_failures(repair.x[failing], repair.y[failing], p["expand"], p["shift"], p["noise"], ctx.rng)
        take = min(len(train), p["train_samples"])
        pick = ctx.rng.choice(len(train), size=take, replace=False)
        tx, ty = train.x[pick], train.y[pick]
        n_mix = max(1, int(round(p["mix_ratio"] * take)))
        mixed = gm.guided_mix(fx, fy, tx, ty, n_mix, num_classes, p["alpha"], p["same_class_prob"], ctx.rng)
        ctx.progress(0.05, "mix", f"{int(failing.sum())} failures expanded to {len(fy)}; {n_mix} mixed samples "
                     f"({int(mixed.same_class.sum())} with a same-class partner)")
        eye = np.eye(num_classes, dtype=np.float32)
        x = np.concatenate([tx, repair.x, mixed.x]).astype(np.float32)
        soft = np.concatenate([eye[ty], eye[repair.y], mixed.soft])

        def progress(epoch, acc, best):
            if ctx.should_stop():  # out of budget: retraining stops and keeps its best epoch
                return
            ctx.progress(0.05 + 0.95 * epoch / p["epochs"], "retrain",
                         f"epoch {epoch}: valid acc {acc:.4f} (best {best:.4f})", valid_acc=acc)

        before, best, best_epoch = gm.retrain(
            model, x, soft, p["epochs"], p["learning_rate"], p["batch_size"], probs, ctx.rng,
            lambda m: accuracy(m, valid.x, valid.y), progress, ctx.should_stop, p["patience"])
        metrics = {"base_valid_acc": before, "valid_acc": best, "best_epoch": float(best_epoch),
                   "failures": float(failing.sum()), "mixed_samples": float(n_mix)}
        if best_epoch == 0:
            why = ("the budget ran out before a retraining epoch improved validation accuracy" if ctx.should_stop()
                   else "no retraining epoch improved validation accuracy")
            return Outcome(model=None, metrics=metrics, message=f"{why}; the model is left unchanged")
        classes = np.bincount(repair.y[failing], minlength=num_classes)
        summary = (f"retrained on {take} training + {len(repair.y)} repair + {n_mix} guided-mix samples; valid acc "
                   f"{before:.4f} -> {best:.4f} (epoch {best_epoch}); failures by true class "
                   + ", ".join(f"{c}: {int(k)}" for c, k in enumerate(classes) if k))
        return Outcome(model=ctx.export(model), metrics=metrics, diagnosis=Diagnosis(summary=summary))


if __name__ == "__main__":
    serve(FewshotMix)
