"""hybridrepair: annotation-efficient repair (Li, Chen, Xu, ISSTA 2022). Within a labelling
budget, label the centres of the unsmoothest feature regions of an unlabeled pool, propagate
their labels to the region, and fine-tune with those labels plus a semi-supervised term on
the smooth part of the pool only. See README.md for what was scaled or substituted."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hr_core  # noqa: E402

from fixbench.sdk import Approach, Diagnosis, Outcome, Param, ParamError, serve  # noqa: E402
from fixbench.sdk.torch_helpers import accuracy, classification_loss, outputs_are_probabilities  # noqa: E402

PRESETS = {
    "default": {"epochs": 3, "tta_iters": 4, "train_iters": 2, "learning_rate": 0.001},
    # repair.sh / selection.py: budget 1 %, HDBSCAN min_samples 3, regions of ~10, lam 100,
    # SGD lr 0.001 (momentum 0.9, weight decay 5e-4), 10 epochs, 32 TTA views, 8 per step.
    "paper": {"epochs": 10, "tta_iters": 32, "train_iters": 8, "learning_rate": 0.001},
}


def effective_params(ctx) -> dict:
    params = dict(ctx.params)
    given = set(ctx.job.params.keys())
    for key, value in PRESETS[params["preset"]].items():
        if key not in given:
            params[key] = value
    return params


class HybridRepair(Approach):
    name = "hybridrepair"
    version = "1.0.0"
    level = "model"
    paper = ("Y. Li, M. Chen, Q. Xu. HybridRepair: Towards Annotation-Efficient Repair for Deep Learning "
             "Models. ISSTA 2022")
    summary = ("Labels the centres of the unsmoothest feature regions within a budget, propagates the labels "
               "to each region, and fine-tunes semi-supervised on the smooth part of the unlabeled pool.")
    needs = ("repair_data", "training_data")
    fault_families = ("misclassification",)
    params = (
        Param("preset", str, "default", "default (minutes on 2 CPU cores) or paper (repair.sh's settings); fills the parameters the job does not set"),
        Param("budget", float, 0.01, "labelling budget as a fraction of the unlabeled pool (1 % as in the tool's README)"),
        Param("pool", str, "train+repair", "unlabeled pool: 'train+repair' or 'train' (labels read only by the oracle)"),
        Param("min_samples", int, 3, "HDBSCAN min_samples (noise removal before k-means)"),
        Param("avg_cluster_size", int, 10, "about how many inputs per region (k-means k = clustered inputs / this)"),
        Param("tau", float, -1.0, "unsmoothness cut for the unlabeled term; -1 = the pool's mean unsmoothness (the tool's avg_tao)"),
        Param("lam", float, 100.0, "weight of the semi-supervised (MSE) term"),
        Param("tta_iters", int, 4, "augmented views per input for the unsmoothness"),
        Param("train_iters", int, 2, "augmented views per unlabeled input in each training step"),
        Param("epochs", int, 3, "fine-tuning epochs (an epoch = one pass over the pool in unlabeled batches)"),
        Param("learning_rate", float, 0.001, "SGD learning rate (momentum 0.9, weight decay 5e-4, as the tool)"),
        Param("batch_size", int, 64, "labelled and unlabeled batch size each"),
    )

    @classmethod
    def validate_params(cls, values):
        if values["preset"] not in PRESETS:
            raise ParamError(f"preset must be one of {', '.join(PRESETS)}, not {values['preset']!r}")
        if values["pool"] not in ("train+repair", "train"):
            raise ParamError(f"pool must be 'train+repair' or 'train', not {values['pool']!r}")
        if not 0 < values["budget"] <= 1:
            raise ParamError("budget must be a fraction in (0, 1]")
        if not (values["tau"] == -1.0 or 0 <= values["tau"] <= 1):
            raise ParamError("tau must be in [0, 1], or -1 for the pool's mean")
        for key in ("min_samples", "avg_cluster_size", "tta_iters", "epochs", "batch_size"):
            if values[key] < 1:
                raise ParamError(f"{key} must be >= 1")
        if values["train_iters"] < 0 or values["lam"] < 0 or not values["learning_rate"] > 0:
            raise ParamError("train_iters and lam must be >= 0, learning_rate > 0")

    def check(self, ctx):
        ops = {n.op_type for n in ctx.model.graph.node}
        if not ops & {"Gemm", "MatMul"}:
            return "HybridRepair clusters the features feeding the last dense layer; the model has no dense (Gemm/MatMul) layer"
        return None

    def repair(self, ctx):
        import torch

        p = effective_params(ctx)
        repair, train = ctx.split("repair"), ctx.split("train")
        pool_x = train.x if p["pool"] == "train" else np.concatenate([train.x, repair.x])
        pool_y = train.y if p["pool"] == "train" else np.concatenate([train.y, repair.y])
        num_classes = int(ctx.job.data.num_classes) or int(pool_y.max()) + 1
        gen = torch.Generator().manual_seed(ctx.seed)
        model = ctx.torch_model()
        probs = outputs_are_probabilities(ctx.original_predictor.scores(pool_x[:64]))
        budget = max(1, int(round(p["budget"] * len(pool_x))))

        ctx.progress(0.0, "unsmoothness", f"test-time augmentation of {len(pool_x)} pool inputs")
        unsmooth, _ = hr_core.tta_unsmoothness(model, pool_x, probs, p["tta_iters"], gen)
        ctx.progress(0.15, "regions", "clustering the pool's features")
        latents = hr_core.penultimate_features(model, pool_x)
        regions, centres = hr_core.cluster_regions(latents, budget, p["min_samples"], p["avg_cluster_size"], ctx.seed)
        asked, members, labels = hr_core.label_regions(regions, centres, unsmooth, budget, oracle=lambda i: pool_y[i])
        propagated_acc = float((labels == pool_y[members]).mean()) if len(members) else 0.0
        tau = float(unsmooth.mean()) if p["tau"] == -1.0 else p["tau"]
        weights = hr_core.unlabeled_weights(unsmooth, tau, members)
        ctx.log(f"{len(regions)} regions; {len(asked)} labels asked, propagated to {len(members)} inputs "
                f"({propagated_acc:.3f} correct); tau {tau:.3f}: {int((weights > 0).sum())} pool inputs in the unlabeled term")
        ctx.progress(0.25, "labelling", f"{len(asked)} labels propagated to {len(members)} inputs",
                     labels_asked=len(asked), propagated=len(members), propagated_acc=propagated_acc)

        # Propagated labels replace the model's guess in the unlabeled targets (smoothed one-hot).
        plabel = np.full(len(pool_x), -1, np.int64)
        plabel[members] = labels
        lx, ly = pool_x[members].astype(np.float32), labels
        loss_fn = classification_loss(probs)
        optimiser = torch.optim.SGD(model.parameters(), lr=p["learning_rate"], momentum=0.9, weight_decay=5e-4)
        bs = p["batch_size"]
        w = weights / weights.sum()
        steps = max(len(lx) // bs, len(pool_x) // bs, 1)
        for epoch in range(1, p["epochs"] + 1):
            model.train()
            l_order = ctx.rng.permutation(len(lx))
            for step in range(steps):
                if ctx.should_stop():
                    break
                li = l_order[(np.arange(bs) + step * bs) % len(lx)]
                xl, yl = torch.from_numpy(lx[li]), torch.from_numpy(ly[li])
                ui = ctx.rng.choice(len(pool_x), size=bs, replace=True, p=w)
                xu = torch.from_numpy(pool_x[ui].astype(np.float32))
                views = [xu] + [hr_core.augment(xu, gen) for _ in range(p["train_iters"])]
                with torch.no_grad():
                    target = hr_core.sharpen(torch.stack([hr_core.to_probs(model(v), probs) for v in views]).mean(0))
                    known = torch.from_numpy(plabel[ui] >= 0)
                    if known.any():
                        target[known] = hr_core.smooth_one_hot(torch.from_numpy(plabel[ui][known.numpy()]), num_classes)
                inputs = torch.cat([xl] + views)
                targets = torch.cat([torch.nn.functional.one_hot(yl, num_classes).float()] + [target] * len(views))
                lam_mix = float(ctx.rng.beta(0.75, 0.75))
                lam_mix = max(lam_mix, 1 - lam_mix)
                perm = torch.from_numpy(ctx.rng.permutation(len(inputs)))
                mixed_x = lam_mix * inputs + (1 - lam_mix) * inputs[perm]
                mixed_t = lam_mix * targets + (1 - lam_mix) * targets[perm]
                optimiser.zero_grad()
                out = model(mixed_x)
                # As the tool: the labelled rows' cross-entropy is on their own labels; the
                # unlabeled rows match the mixed targets in squared error.
                l_loss = loss_fn(out[: len(yl)], yl)
                u_loss = torch.mean((hr_core.to_probs(out[len(yl):], probs) - mixed_t[len(yl):]) ** 2)
                (l_loss + p["lam"] * u_loss).backward()
                optimiser.step()
            acc = accuracy(model, pool_x[members], pool_y[members]) if len(members) else 0.0
            ctx.progress(0.25 + 0.75 * epoch / p["epochs"], "fine-tune", f"epoch {epoch}: labelled-region acc {acc:.3f}",
                         region_acc=acc)
            if ctx.should_stop():
                break

        diagnosis = Diagnosis(summary=(
            f"{len(regions)} feature regions of {len(pool_x)} pool inputs; budget {budget} labels on the unsmoothest "
            f"regions, propagated to {len(members)} inputs ({propagated_acc:.1%} correct); unlabeled term on "
            f"{int((weights > 0).sum())} smooth inputs (tau {tau:.3f})"))
        return Outcome(model=ctx.export(model), diagnosis=diagnosis, metrics={
            "labels_asked": float(len(asked)), "propagated": float(len(members)), "propagated_acc": propagated_acc,
            "regions": float(len(regions)), "tau": tau, "unlabeled_used": float((weights > 0).sum()),
        })


if __name__ == "__main__":
    serve(HybridRepair)
