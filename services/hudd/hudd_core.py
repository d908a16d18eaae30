"""HUDD's core steps (Fahmy, Pastore, Bagherzadeh, Briand, IEEE Trans. Reliability 2021),
written after the paper and a reading of SNTSVV/HUDD-Toolset:

1. heatmaps: layer-wise relevance (LRP) of every neuron of a layer for the class the model
   predicts, for every error-inducing input (captum's LayerLRP, epsilon rule);
2. root-cause clusters: hierarchical agglomerative clustering (Ward) of the heatmaps, the
   number of clusters at the knee of the weighted intra-cluster distance (WICD) curve, and the
   layer whose clustering has the lowest WICD;
3. unsafe set: the improvement-set inputs whose heatmap falls inside a cluster (nearest
   centroid, within the cluster's radius), nearest first;
4. balancing by bootstrap resampling so that every root cause weighs the same in retraining.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import cdist, pdist, squareform
from sklearn.preprocessing import normalize


# ---- the model as LRP needs it ----------------------------------------------------------
def logits_module(model):
    """A copy of an onnx2torch GraphModule that outputs the logits (a trailing Softmax or
    LogSoftmax removed: HUDD propagates the predicted class's score, as the tool does on
    logit networks) and whose Flatten modules are plain function calls (a reshape moves
    relevance unchanged; captum's LRP has no rule for a Flatten module)."""
    import torch

    model = copy.deepcopy(model)
    graph = getattr(model, "graph", None)
    if graph is None:
        return model
    for node in list(graph.nodes):
        if node.op == "call_module" and isinstance(model.get_submodule(node.target), torch.nn.Flatten):
            flat = model.get_submodule(node.target)
            with graph.inserting_after(node):
                call = graph.call_function(torch.flatten, (node.args[0],),
                                           {"start_dim": flat.start_dim, "end_dim": flat.end_dim})
            node.replace_all_uses_with(call)
            graph.erase_node(node)
    out = next(n for n in graph.nodes if n.op == "output")
    src = out.args[0]
    if src.op == "call_module" and isinstance(model.get_submodule(src.target), (torch.nn.Softmax, torch.nn.LogSoftmax)):
        out.args = (src.args[0],)
        graph.erase_node(src)
    _as_captum_layers(model, graph)
    graph.lint()
    model.recompile()
    model.delete_all_unused_submodules()
    _mark_passive_modules(model)
    return model.eval()


_SUPPORTED = ("Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm2d", "ReLU", "Dropout", "Tanh")


def _as_captum_layers(model, graph) -> None:
    """onnx2torch keeps a MatMul by a constant as its own module: it becomes an nn.Linear so
    that the epsilon rule applies to it. Any other module captum has no rule for (a bias Add,
    a Reshape, ...) is called as a plain function, through which relevance passes unchanged
    (as captum treats ReLU)."""
    import torch

    for node in list(graph.nodes):
        if node.op != "call_module":
            continue
        module = model.get_submodule(node.target)
        if type(module).__name__ in _SUPPORTED:
            continue
        args = node.args
        if (type(module).__name__ == "OnnxMatMul" and len(args) == 2 and getattr(args[1], "op", None) == "get_attr"):
            weight = model.get_submodule(args[1].target.rsplit(".", 1)[0]) if "." in args[1].target else model
            w = getattr(weight, args[1].target.rsplit(".", 1)[-1])
            if w.dim() == 2:
                linear = torch.nn.Linear(w.shape[0], w.shape[1], bias=False)
                with torch.no_grad():
                    linear.weight.copy_(w.t())
                name = node.target.replace(".", "_") + "_linear"
                model.add_module(name, linear)
                with graph.inserting_after(node):
                    call = graph.call_module(name, (args[0],))
                node.replace_all_uses_with(call)
                graph.erase_node(node)
                continue
        with graph.inserting_after(node):
            call = graph.call_function(module.forward, node.args, node.kwargs)
        node.replace_all_uses_with(call)
        graph.erase_node(node)


def _mark_passive_modules(model) -> None:
    """Leaf modules captum has no rule for and that are no longer called as modules (weight
    holders, modules now called as functions) get the identity rule: their hooks never run."""
    from captum.attr._utils.lrp_rules import IdentityRule

    for module in model.modules():
        if not list(module.children()) and type(module).__name__ not in _SUPPORTED:
            module.rule = IdentityRule()


def candidate_layers(model) -> list[str]:
    """Names of the Conv2d / Linear modules whose activations HUDD may cluster: every one but
    the output layer (its relevance is the prediction itself)."""
    import torch

    names = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    graph = getattr(model, "graph", None)
    if graph is None:
        return names[:-1]
    # The output layer: the one whose output is the graph's output.
    src = next(n for n in graph.nodes if n.op == "output").args[0]
    while src.op == "call_function" and src.args and hasattr(src.args[0], "op"):
        src = src.args[0]  # through a bias add or reshape after the output layer
    return [n for n in names if not (src.op == "call_module" and src.target == n)]


def layer_heatmaps(model, layer: str, x: np.ndarray, batch_size: int = 256, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """LRP relevance of `layer`'s output neurons for the predicted class, one flattened
    heatmap per input, and the predicted classes. `model` is a logits_module."""
    import torch
    from captum.attr import LayerLRP

    module = model.get_submodule(layer)
    maps, preds = [], []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32))
        with torch.no_grad():
            target = model(xb).argmax(dim=1)
        # captum removes every rule after an attribution: the passive modules get theirs again.
        _mark_passive_modules(model)
        rel = LayerLRP(model, module).attribute(xb, target=target)
        maps.append(rel.detach().reshape(len(xb), -1).numpy().astype(np.float64))
        preds.append(target.numpy())
        if progress is not None:
            progress(min(len(x), i + batch_size) / max(1, len(x)))
    if not maps:
        return np.zeros((0, 0)), np.zeros(0, np.int64)
    return np.concatenate(maps), np.concatenate(preds)


# ---- clustering ---------------------------------------------------------------------------
def wicd(dist: np.ndarray, labels: np.ndarray) -> float:
    """Weighted intra-cluster distance: over clusters, the mean pairwise distance of the
    cluster's members weighted by the cluster's share of the inputs, summed and divided by
    the number of clusters (singletons add nothing), as the tool's getAvgLayer_WICD."""
    ids = np.unique(labels)
    total = 0.0
    for c in ids:
        members = np.flatnonzero(labels == c)
        if len(members) > 1:
            block = dist[np.ix_(members, members)]
            mean_pair = block[np.triu_indices(len(members), 1)].mean()
            total += mean_pair * len(members) / len(labels)
    return total / len(ids)


def knee(x: np.ndarray, y: np.ndarray) -> int:
    """Index of the knee of a concave increasing curve (Kneedle, Satopää et al. 2011, offline):
    after scaling both axes to [0, 1], the point farthest above the diagonal."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3:
        return 0
    xn = (x - x.min()) / max(x.max() - x.min(), 1e-12)
    yn = (y - y.min()) / max(y.max() - y.min(), 1e-12)
    return int(np.argmax(yn - xn))


@dataclass
class Clustering:
    labels: np.ndarray  # one cluster id (0..k-1) per heatmap
    k: int
    wicd: float
    curve: list[tuple[int, float]]  # (number of clusters, WICD) for every k tried


def cluster_heatmaps(heatmaps: np.ndarray, max_clusters: int) -> Clustering:
    """HUDD's clustering of one layer's heatmaps: Euclidean distances between heatmaps, each
    row of the distance matrix scaled by its maximum (the tool's normalize(norm='max')), Ward
    linkage on those rows, and for k = 2..max_clusters the WICD; k is chosen at the knee of the
    WICD curve's gradient (the tool's 'KG' selection)."""
    n = len(heatmaps)
    if n < 3:
        # Too few errors to cluster: each is its own root cause.
        labels = np.arange(n)
        return Clustering(labels, n, 0.0, [])
    dist = squareform(pdist(heatmaps, "euclidean"))
    scaled = normalize(dist, norm="max")
    tree = linkage(pdist(scaled), method="ward", optimal_ordering=True)
    top = int(max(2, min(max_clusters, n - 1)))
    ks, values, all_labels = [], [], []
    for k in range(2, top + 1):
        labels = fcluster(tree, t=k, criterion="maxclust") - 1
        ks.append(k)
        values.append(wicd(scaled, labels))
        all_labels.append(labels)
    if len(ks) < 3:
        pick = int(np.argmin(values))
    else:
        # WICD falls as k grows; its gradient rises towards zero, concave: the knee is where
        # adding clusters stops paying.
        pick = knee(np.array(ks), np.gradient(np.array(values)))
    labels = all_labels[pick]
    return Clustering(labels, int(labels.max()) + 1, float(values[pick]), list(zip(ks, map(float, values), strict=True)))


# ---- the unsafe set -------------------------------------------------------------------------
def heatmaps_finite(maps: np.ndarray) -> np.ndarray:
    """Per heatmap, whether every relevance is finite. LRP's epsilon rule divides by
    pre-activations, and through many BatchNorm / concatenation stages (the DenseNet-121
    subject) relevance can overflow float64 at some layers: such a heatmap has no distance
    to the others, so a layer where an error's heatmap overflows is not clustered and an
    improvement-set input whose heatmap overflows is assigned to no root cause."""
    return np.isfinite(maps).all(axis=1) if maps.size else np.ones(len(maps), bool)


def assign_to_clusters(pool_maps: np.ndarray, cluster_maps: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each improvement-set heatmap: the nearest cluster centroid (mean heatmap) and the
    distance to it, or cluster -1 when it lies outside that cluster's radius (the farthest
    member's distance to the centroid) — the tool's 'Centroid' assignment. A heatmap that is
    not finite (heatmaps_finite) lies in no cluster (-1, distance inf)."""
    ids = np.unique(labels)
    centroids = np.stack([cluster_maps[labels == c].mean(axis=0) for c in ids])
    radius = np.array([np.linalg.norm(cluster_maps[labels == c] - centroids[i], axis=1).max() for i, c in enumerate(ids)])
    finite = heatmaps_finite(pool_maps)
    d = np.full((len(pool_maps), len(ids)), np.inf)
    if finite.any():
        d[finite] = cdist(pool_maps[finite], centroids)
    nearest = d.argmin(axis=1)
    dist = d[np.arange(len(pool_maps)), nearest]
    inside = finite & (dist <= radius[nearest] + 1e-9)
    return np.where(inside, ids[nearest], -1), dist


def unsafe_set(assigned: np.ndarray, dist: np.ndarray, per_cluster: int) -> dict[int, np.ndarray]:
    """Per cluster, up to `per_cluster` assigned inputs, nearest to the centroid first."""
    out = {}
    for c in np.unique(assigned[assigned >= 0]):
        members = np.flatnonzero(assigned == c)
        order = members[np.argsort(dist[members], kind="stable")]
        out[int(c)] = order[:per_cluster]
    return out


def bootstrap_balance(selected: dict[int, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Indices of the unsafe set resampled with replacement so that every cluster contributes
    as many inputs as the largest one (bootstrap resampling, as HUDD's retraining)."""
    if not selected:
        return np.zeros(0, np.int64)
    size = max(len(v) for v in selected.values())
    parts = []
    for c in sorted(selected):
        members = selected[c]
        extra = rng.choice(members, size=size - len(members), replace=True) if size > len(members) else members[:0]
        parts.append(np.concatenate([members, extra]))
    return np.concatenate(parts).astype(np.int64)
