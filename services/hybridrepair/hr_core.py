"""HybridRepair's core steps (Li, Chen, Xu, ISSTA 2022), written after the paper and a reading
of cure-lab/HybridRepair (selection.py, solution 'TTA', clustering 'hybrid'):

1. unsmoothness: the normalised entropy of the model's mean prediction over augmented copies
   of each unlabeled input (test-time augmentation); failure regions are unsmooth;
2. regions: density clustering (HDBSCAN) of the inputs' feature vectors drops noise points,
   then k-means splits the rest into regions of about `avg_cluster_size` inputs;
3. labelling within the budget: the regions with the largest summed unsmoothness get their
   centre labelled by the oracle, and the label is propagated to every input of the region;
4. selective semi-supervised fine-tuning: labelled (propagated) inputs with cross-entropy, and
   only the smooth unlabeled inputs (unsmoothness <= tau, weighted 1 - unsmoothness) with a
   sharpened-mean-prediction target under MixUp (MixMatch-style), weight `lam`.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.cluster import HDBSCAN, KMeans


# ---- augmentation -------------------------------------------------------------------------
def augment(x, gen):
    """One random augmentation per input (torch tensors). Images (N, C, H, W): a shift of up to
    2 pixels, a contrast change of up to 20 % and slight Gaussian noise; vectors: Gaussian
    noise of a tenth of the batch's per-feature spread. (The tool uses AugMix's PIL operations
    on CIFAR; these are their tensor analogues for any image size and for tabular inputs.)"""
    import torch

    n = x.shape[0]
    if x.dim() == 4:
        pad = 2
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        h, w = x.shape[2], x.shape[3]
        out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
        scale = 1.0 + 0.2 * (2 * torch.rand((n, 1, 1, 1), generator=gen) - 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * scale + mean
        spread = (x.amax() - x.amin()).clamp_min(1e-6)
        return out + 0.03 * spread * torch.randn(out.shape, generator=gen)
    std = x.std(dim=0, keepdim=True).clamp_min(1e-6) if n > 1 else torch.ones_like(x)
    return x + 0.1 * std * torch.randn(x.shape, generator=gen)


def to_probs(out, probabilities: bool):
    import torch

    return out if probabilities else torch.softmax(out, dim=1)


# ---- step 1: features and unsmoothness ----------------------------------------------------
def penultimate_features(model, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The input of the model's last dense layer (the tool uses a MoCo v3 encoder; no
    pretrained encoder can be downloaded here, so the faulty model's own representation
    stands in)."""
    import torch

    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not last:
        raise ValueError("the model has no dense layer to take features from")
    grabbed = []
    hook = last[-1].register_forward_hook(lambda mod, inp, out: grabbed.append(inp[0].detach().reshape(len(inp[0]), -1)))
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)))
    finally:
        hook.remove()
    return torch.cat(grabbed).numpy().astype(np.float64)


def tta_unsmoothness(model, x: np.ndarray, probabilities: bool, n_iters: int, gen, batch_size: int = 256):
    """Mean prediction over the clean input and `n_iters` augmented copies, and the entropy
    of that mean divided by its largest value over the pool (the tool's mean_entropies)."""
    import torch

    model.eval()
    means = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32))
            views = [xb] + [augment(xb, gen) for _ in range(n_iters)]
            p = torch.stack([to_probs(model(v), probabilities) for v in views]).mean(0)
            means.append(p.numpy().astype(np.float64))
    mean_p = np.concatenate(means)
    entropy = -(mean_p * np.log2(np.clip(mean_p, 1e-12, 1.0))).sum(axis=1)
    return entropy / max(entropy.max(), 1e-12), mean_p


# ---- step 2: regions ----------------------------------------------------------------------
def cluster_regions(latents: np.ndarray, budget: int, min_samples: int, avg_cluster_size: int, seed: int):
    """The tool's 'hybrid' clustering: unit-length features, HDBSCAN to mark noise, k-means on
    the rest into max(n_clustered // avg_cluster_size, min(budget, n_clustered)) regions; a
    region's centre is the input nearest its k-means centroid. Returns (regions, centres),
    each region an array of pool indices."""
    z = latents / np.maximum(np.linalg.norm(latents, axis=1, keepdims=True), 1e-12)
    labels = HDBSCAN(min_samples=min_samples).fit_predict(z) if len(z) > min_samples else -np.ones(len(z), int)
    keep = np.flatnonzero(labels != -1)
    if len(keep) == 0:
        keep = np.arange(len(z))  # all noise: regions over the whole pool rather than none
    n_regions = max(len(keep) // max(1, avg_cluster_size), min(budget, len(keep)), 1)
    km = KMeans(n_clusters=n_regions, random_state=seed, n_init=1).fit(z[keep])
    regions = [keep[km.labels_ == c] for c in range(n_regions)]
    centres = np.array([r[np.argmin(cdist(z[r], km.cluster_centers_[c : c + 1])[:, 0])] for c, r in enumerate(regions)])
    keep_regions = [i for i, r in enumerate(regions) if len(r)]
    return [regions[i] for i in keep_regions], centres[keep_regions]


# ---- step 3: labelling and propagation ----------------------------------------------------
def label_regions(regions, centres, unsmoothness: np.ndarray, budget: int, oracle):
    """Spends the budget on the regions with the largest summed unsmoothness: each one's centre
    is labelled by `oracle(index) -> label` and its label given to the whole region (the
    tool's unsth_region_plabeling). Returns (asked indices, propagated indices, their labels)."""
    scores = np.array([unsmoothness[r].sum() for r in regions])
    order = np.argsort(-scores, kind="stable")[: int(budget)]
    asked, members, labels = [], [], []
    for c in order:
        label = int(oracle(int(centres[c])))
        asked.append(int(centres[c]))
        members.extend(int(i) for i in regions[c])
        labels.extend([label] * len(regions[c]))
    return np.array(asked, np.int64), np.array(members, np.int64), np.array(labels, np.int64)


def unlabeled_weights(unsmoothness: np.ndarray, tau: float, labelled: np.ndarray) -> np.ndarray:
    """Sampling weights of the pool in the semi-supervised term: 1 - unsmoothness for smooth
    inputs (<= tau), 0 for unsmooth ones (SSL on them would learn the shift's errors), 1 for
    inputs that carry a propagated label."""
    w = 1.0 - unsmoothness
    w[unsmoothness > tau] = 0.0
    w[labelled] = 1.0
    return w


def sharpen(p, temperature: float = 0.5):
    q = p ** (1.0 / temperature)
    return q / q.sum(dim=1, keepdim=True)


def smooth_one_hot(labels, classes: int, smoothing: float = 0.1):
    import torch

    out = torch.full((len(labels), classes), smoothing / (classes - 1))
    out[torch.arange(len(labels)), labels] = 1.0 - smoothing
    return out
