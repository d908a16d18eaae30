"""hudd: Heatmap-based Unsupervised Debugging of DNNs (Fahmy, Pastore, Bagherzadeh, Briand,
IEEE Trans. Reliability 2021). LRP heatmaps of the error-inducing repair inputs, hierarchical
clustering into root causes, the improvement-set inputs nearest each root cause (the unsafe
set, labelled by the oracle), and retraining on the training data plus the balanced unsafe
set. See README.md for what was scaled or substituted."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hudd_core  # noqa: E402

from fixbench.sdk import Approach, Diagnosis, LocalisedNeuron, Outcome, Param, ParamError, serve  # noqa: E402
from fixbench.sdk.torch_helpers import accuracy, classification_loss, minibatches, outputs_are_probabilities  # noqa: E402

# Values each preset gives the parameters that the job does not set itself.
PRESETS = {
    "default": {"epochs": 4, "learning_rate": 0.001, "unsafe_per_cluster": 40, "max_failures": 300, "max_clusters": 0},
    # The tool's retraining: SGD lr 0.001, momentum 0.9, weight decay 5e-4, 10 epochs (its
    # OC/GD/HPD cases); every error-inducing input clustered; k up to half the errors.
    "paper": {"epochs": 10, "learning_rate": 0.001, "unsafe_per_cluster": 40, "max_failures": 0, "max_clusters": 0},
}


def effective_params(ctx) -> dict:
    params = dict(ctx.params)
    given = set(ctx.job.params.keys())
    for key, value in PRESETS[params["preset"]].items():
        if key not in given:
            params[key] = value
    return params


class Hudd(Approach):
    name = "hudd"
    version = "1.0.0"
    level = "model"
    paper = ("H. Fahmy, F. Pastore, M. Bagherzadeh, L. Briand. Supporting Deep Neural Network Safety Analysis "
             "and Retraining Through Heatmap-Based Unsupervised Learning. IEEE Trans. Reliability 70(4), 2021")
    summary = ("LRP heatmaps of the failing inputs, Ward clustering into root causes, the improvement-set inputs "
               "nearest each cluster (unsafe set) labelled and bootstrap-balanced, then retraining.")
    needs = ("repair_data", "training_data")
    fault_families = ("misclassification",)
    params = (
        Param("preset", str, "default", "default (minutes on 2 CPU cores) or paper (the tool's settings); fills the parameters the job does not set"),
        Param("layer", str, "auto", "layer whose heatmaps are clustered: 'auto' (lowest WICD, as HUDD) or a module name"),
        Param("max_clusters", int, 0, "most clusters tried; 0 = HUDD's rule, half the error-inducing inputs (2..500)"),
        Param("max_failures", int, 300, "error-inducing inputs clustered (a seeded sample; 0 = all)"),
        Param("unsafe_per_cluster", int, 40, "improvement-set inputs taken per root-cause cluster, nearest first"),
        Param("pool", str, "train+repair", "improvement set: 'train+repair' or 'train' (labels read only for the unsafe set)"),
        Param("epochs", int, 4, "retraining epochs"),
        Param("learning_rate", float, 0.001, "SGD learning rate (momentum 0.9, weight decay 5e-4, as the tool)"),
        Param("batch_size", int, 64, "mini-batch size"),
    )

    @classmethod
    def validate_params(cls, values):
        if values["preset"] not in PRESETS:
            raise ParamError(f"preset must be one of {', '.join(PRESETS)}, not {values['preset']!r}")
        if values["pool"] not in ("train+repair", "train"):
            raise ParamError(f"pool must be 'train+repair' or 'train', not {values['pool']!r}")
        for key in ("max_clusters", "max_failures"):
            if values[key] < 0:
                raise ParamError(f"{key} must be >= 0")
        for key in ("unsafe_per_cluster", "epochs", "batch_size"):
            if values[key] < 1:
                raise ParamError(f"{key} must be >= 1")
        if not values["learning_rate"] > 0:
            raise ParamError("learning_rate must be > 0")

    def check(self, ctx):
        # Cheap: the graph's op types, no torch conversion.
        ops = {n.op_type for n in ctx.model.graph.node}
        if not ops & {"Conv", "Gemm", "MatMul"}:
            return "HUDD needs Conv or dense (Gemm/MatMul) layers to compute layer heatmaps; the model has none"
        return None

    def repair(self, ctx):
        import torch

        p = effective_params(ctx)
        repair, train = ctx.split("repair"), ctx.split("train")
        failing = np.flatnonzero(ctx.failing_mask("repair"))
        if len(failing) == 0:
            return Outcome(model=None, message="the model misclassifies no repair input: nothing to debug")
        if p["max_failures"] and len(failing) > p["max_failures"]:
            failing = np.sort(ctx.rng.choice(failing, size=p["max_failures"], replace=False))

        model = ctx.torch_model()
        lrp_model = hudd_core.logits_module(model)
        layers = hudd_core.candidate_layers(lrp_model)
        if p["layer"] != "auto":
            if p["layer"] not in layers:
                raise ParamError(f"layer {p['layer']!r} is not one of the model's clusterable layers: {', '.join(layers)}")
            layers = [p["layer"]]
        if not layers:
            return Outcome(model=None, message="the model has no hidden Conv/dense layer to compute heatmaps at")
        max_k = p["max_clusters"] or int(min(500, max(2, len(failing) // 2)))

        # 1-2. Heatmaps of the error-inducing inputs and their clustering, layer by layer.
        results = {}
        for li, layer in enumerate(layers):
            def report(f, li=li, layer=layer):
                ctx.progress(0.4 * (li + f * 0.7) / len(layers), "heatmaps", f"layer {layer}: LRP heatmaps")
            maps, _ = hudd_core.layer_heatmaps(lrp_model, layer, repair.x[failing], progress=report)
            overflowed = int((~hudd_core.heatmaps_finite(maps)).sum())
            if overflowed:
                ctx.log(f"layer {layer}: LRP relevance overflowed for {overflowed} of {len(maps)} errors; "
                        "the layer is not clustered")
                continue
            ctx.progress(0.4 * (li + 0.7) / len(layers), "clustering", f"layer {layer}: clustering {len(maps)} heatmaps")
            clustering = hudd_core.cluster_heatmaps(maps, max_k)
            results[layer] = (maps, clustering)
            ctx.log(f"layer {layer}: {clustering.k} clusters, WICD {clustering.wicd:.4f}")
            ctx.progress(0.4 * (li + 1) / len(layers), "clustering", f"layer {layer}: {clustering.k} clusters",
                         wicd=clustering.wicd, clusters=clustering.k)
        if not results:
            return Outcome(model=None, message=f"LRP relevance overflowed at every candidate layer ({', '.join(layers)}): "
                           "no heatmaps to cluster, so no root cause and no unsafe set")
        chosen = min(results, key=lambda name: (results[name][1].wicd, layers.index(name)))
        maps, clustering = results[chosen]

        # 3. The unsafe set: improvement-set inputs whose heatmap at the chosen layer lies in a
        # root-cause cluster. Their labels are read (the oracle) only once they are selected.
        pool_x = train.x if p["pool"] == "train" else np.concatenate([train.x, repair.x])
        pool_y = train.y if p["pool"] == "train" else np.concatenate([train.y, repair.y])

        def report_pool(f):
            ctx.progress(0.4 + 0.2 * f, "unsafe-set", "heatmaps of the improvement set")
        pool_maps, _ = hudd_core.layer_heatmaps(lrp_model, chosen, pool_x, progress=report_pool)
        assigned, dist = hudd_core.assign_to_clusters(pool_maps, maps, clustering.labels)
        selected = hudd_core.unsafe_set(assigned, dist, p["unsafe_per_cluster"])
        bag = hudd_core.bootstrap_balance(selected, ctx.rng)
        n_unsafe = int(sum(len(v) for v in selected.values()))
        ctx.log(f"unsafe set: {n_unsafe} inputs in {len(selected)} clusters, {len(bag)} after bootstrap balancing")
        if len(bag) == 0:
            return Outcome(model=None, message="no improvement-set input falls inside a root-cause cluster")

        # 4. Retraining on the training data plus the balanced unsafe set.
        x = np.concatenate([train.x, pool_x[bag]]).astype(np.float32)
        y = np.concatenate([train.y, pool_y[bag]]).astype(np.int64)
        probs = outputs_are_probabilities(ctx.original_predictor.scores(train.x[:64]))
        loss_fn = classification_loss(probs)
        optimiser = torch.optim.SGD(model.parameters(), lr=p["learning_rate"], momentum=0.9, weight_decay=5e-4)
        for epoch in range(1, p["epochs"] + 1):
            model.train()
            for idx in minibatches(len(y), p["batch_size"], ctx.rng):
                if ctx.should_stop():
                    break
                optimiser.zero_grad()
                loss = loss_fn(model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
                loss.backward()
                optimiser.step()
            acc = accuracy(model, repair.x[failing], repair.y[failing])
            ctx.progress(0.6 + 0.4 * epoch / p["epochs"], "retrain", f"epoch {epoch}: failing-input acc {acc:.3f}",
                         failing_acc=acc)
            if ctx.should_stop():
                break

        # The localisation: the chosen layer, and its neurons by mean relevance over the errors.
        relevance = np.abs(maps).mean(axis=0)
        module = lrp_model.get_submodule(chosen)
        if isinstance(module, torch.nn.Conv2d):
            # A conv layer's neurons are its channels: relevance summed over positions.
            relevance = relevance.reshape(module.out_channels, -1).sum(axis=1)
        top = np.argsort(-relevance, kind="stable")[:20]
        sizes = sorted((int((clustering.labels == c).sum()) for c in range(clustering.k)), reverse=True)
        diagnosis = Diagnosis(
            layers=[chosen],
            neurons=[LocalisedNeuron(layer=chosen, index=int(i), score=float(relevance[i])) for i in top],
            summary=(f"{clustering.k} root-cause clusters of {len(failing)} error-inducing inputs at layer {chosen} "
                     f"(WICD {clustering.wicd:.4f}; sizes {sizes}); unsafe set {n_unsafe} inputs, {len(bag)} after balancing"),
        )
        return Outcome(model=ctx.export(model), diagnosis=diagnosis, metrics={
            "clusters": float(clustering.k), "wicd": clustering.wicd, "unsafe_set": float(n_unsafe),
            "retrain_samples": float(len(y)), "failures_clustered": float(len(failing)),
        })


if __name__ == "__main__":
    serve(Hudd)
