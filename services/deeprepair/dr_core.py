"""DeepRepair's core steps (Yu, Qi, Guo, Juefei-Xu, Xie, Ma, Zhao, IEEE Trans. Reliability
2021, arXiv 2011.09884), written after the paper and a reading of SaikaQH/DeepRepair:

1. clustering-based failure selection: per class, k-means (k-means++) on the standardised
   failing inputs; one style reference per (class, cluster) — the member nearest the mean;
2. style transfer of training inputs towards those references (the tool: WCT2 with a
   pretrained VGG encoder/decoder; here an optimisation-based transfer in the feature space
   of the faulty model's own convolutional layers, matching per-channel mean and standard
   deviation — the AdaIN statistics — while keeping the content's deepest features);
3. style-guided augmentation in training: AugMix-style mixing of the clean input with its
   failure-styled versions and the Jensen-Shannon consistency loss (weight 12, as the tool).
"""

from __future__ import annotations

import copy

import numpy as np
from sklearn.cluster import KMeans
from sklearn.preprocessing import scale


# ---- 1. failure clustering -------------------------------------------------------------------
def style_references(x_fail: np.ndarray, y_fail: np.ndarray, clusters_per_class: int, seed: int) -> np.ndarray:
    """Indices (into x_fail) of one reference per (class, k-means cluster): per class, the
    flattened failing inputs are standardised per feature (sklearn's scale) and clustered into
    min(clusters_per_class, members) clusters; the member nearest each cluster mean is kept."""
    refs = []
    for c in np.unique(y_fail):
        members = np.flatnonzero(y_fail == c)
        k = min(clusters_per_class, len(members))
        if k <= 1:
            refs.append(int(members[0]))
            continue
        data = scale(x_fail[members].reshape(len(members), -1).astype(np.float64))
        km = KMeans(n_clusters=k, init="k-means++", random_state=seed, n_init=1).fit(data)
        for j in range(k):
            inside = np.flatnonzero(km.labels_ == j)
            if len(inside):
                d = np.linalg.norm(data[inside] - km.cluster_centers_[j], axis=1)
                refs.append(int(members[inside[np.argmin(d)]]))
    return np.array(sorted(set(refs)), np.int64)


# ---- 2. style transfer in the faulty model's feature space -------------------------------------
class Encoder:
    """The faulty model's convolutional feature maps (after ReLU) at every Conv2d layer, with
    the model's weights frozen: what stands in for the VGG encoder of WCT2/AdaIN."""

    def __init__(self, model):
        import torch

        self.model = copy.deepcopy(model).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.layers = [m for m in self.model.modules() if isinstance(m, torch.nn.Conv2d)]
        if not self.layers:
            raise ValueError("the model has no Conv2d layer to take style statistics from")
        self._feats: list = []
        for layer in self.layers:
            layer.register_forward_hook(lambda mod, inp, out: self._feats.append(torch.relu(out)))

    def __call__(self, x):
        self._feats = []
        self.model(x)
        feats, self._feats = self._feats, []
        return feats


def channel_stats(feat):
    """Per-channel mean and standard deviation of (N, C, H, W) feature maps."""
    flat = feat.flatten(2)
    return flat.mean(dim=2), (flat.var(dim=2, unbiased=False) + 1e-5).sqrt()


def stylise(encoder: Encoder, content: np.ndarray, style: np.ndarray, steps: int, style_weight: float,
            lr: float, bounds: tuple[float, float], batch_size: int = 512, should_stop=None) -> np.ndarray:
    """Each content image moved towards its paired style image (Gatys-style optimisation of
    the pixels with Adam): match the style image's per-channel mean/std at every conv layer,
    keep the content's deepest conv features. `content` and `style` have the same shape."""
    import torch

    out = np.empty_like(content, dtype=np.float32)
    lo, hi = bounds
    for i in range(0, len(content), batch_size):
        xc = torch.from_numpy(np.ascontiguousarray(content[i : i + batch_size], dtype=np.float32))
        xs = torch.from_numpy(np.ascontiguousarray(style[i : i + batch_size], dtype=np.float32))
        with torch.no_grad():
            target_content = encoder(xc)[-1]
            target_style = [channel_stats(f) for f in encoder(xs)]
        x = xc.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            if should_stop is not None and should_stop():
                break
            opt.zero_grad()
            feats = encoder(x)
            loss = torch.nn.functional.mse_loss(feats[-1], target_content)
            for f, (m_s, s_s) in zip(feats, target_style, strict=True):
                m, s = channel_stats(f)
                loss = loss + style_weight * (torch.nn.functional.mse_loss(m, m_s) + torch.nn.functional.mse_loss(s, s_s))
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(lo, hi)
        out[i : i + len(xc)] = x.detach().numpy()
    return out


# ---- 3. style-guided AugMix training loss ------------------------------------------------------
def augmix_views(x, styled, rng: np.random.Generator):
    """One augmented view per input: (1 - m) x + m sum_i w_i styled_i, with w ~ Dirichlet(1)
    over the input's failure-styled versions and m ~ Beta(1, 1) (AugMix's mixing, with style
    transfer as the augmentation operation). `styled` is a list of tensors shaped like x."""
    import torch

    n, k = x.shape[0], len(styled)
    w = torch.from_numpy(rng.dirichlet(np.ones(k), size=n).astype(np.float32))
    m = torch.from_numpy(rng.beta(1.0, 1.0, size=n).astype(np.float32))
    shape = (n,) + (1,) * (x.dim() - 1)
    mix = sum(w[:, j].reshape(shape) * styled[j] for j in range(k))
    return (1 - m.reshape(shape)) * x + m.reshape(shape) * mix


def jsd_consistency(p_clean, p_aug1, p_aug2):
    """AugMix's Jensen-Shannon consistency between three predictive distributions."""
    import torch

    mixture = torch.clamp((p_clean + p_aug1 + p_aug2) / 3.0, 1e-7, 1.0).log()
    kl = torch.nn.functional.kl_div
    return (kl(mixture, p_clean, reduction="batchmean") + kl(mixture, p_aug1, reduction="batchmean")
            + kl(mixture, p_aug2, reduction="batchmean")) / 3.0
