"""Cross-check of vere_core.crown_margin_bound: soundness against sampling, and agreement with
auto_LiRPA 0.3's backward (CROWN) bounds where that stack is installed (Python 3.10,
torch 1.12.1, numpy 1.26, tqdm; see README). Run: python services/vere/crosscheck_auto_lirpa.py
Exits non-zero when a bound is unsound or differs from auto_LiRPA's by more than 1e-9."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vere_core as vc  # noqa: E402


def main() -> int:
    rng = np.random.default_rng(0)
    sizes = [6, 8, 5, 3]
    layers = [vc.Layer(rng.normal(size=(a, b)), rng.normal(size=b) * 0.1, i < len(sizes) - 2)
              for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))]
    batch = 4
    x = rng.normal(size=(batch, 6))
    xl, xu = x - 0.3, x + 0.3
    spec = np.zeros((batch, 1, 3))
    spec[:, 0, 0], spec[:, 0, 1] = 1.0, -1.0
    la, lb = vc.crown_margin_bound(layers, xl, xu, spec)
    low = vc._concretise_lower(la, lb, xl, xu)[:, 0]
    samples = xl[None] + (xu - xl)[None] * rng.random((20000, batch, 6))
    out = vc.forward(layers, samples.reshape(-1, 6))[-1].reshape(20000, batch, 3)
    empirical = (out[..., 0] - out[..., 1]).min(axis=0)
    sound = bool((empirical >= low - 1e-9).all())
    print("numpy CROWN lower bound", low, "sampled minimum", empirical, "sound", sound)
    if not sound:
        return 1
    try:
        import torch
        from auto_LiRPA import BoundedModule, BoundedTensor
        from auto_LiRPA.perturbations import PerturbationLpNorm
    except ImportError as exc:
        print("auto_LiRPA not installed here, agreement not checked:", exc)
        return 0
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5), torch.nn.ReLU(),
                              torch.nn.Linear(5, 3)).double()
    with torch.no_grad():
        for module, layer in zip([net[0], net[2], net[4]], layers, strict=True):
            module.weight.copy_(torch.tensor(layer.w.T))
            module.bias.copy_(torch.tensor(layer.b))
    bounded = BoundedModule(net, torch.zeros(batch, 6, dtype=torch.double))
    box = BoundedTensor(torch.tensor(x), PerturbationLpNorm(x_L=torch.tensor(xl), x_U=torch.tensor(xu)))
    theirs, _ = bounded.compute_bounds(x=(box,), method="backward", C=torch.tensor(spec))
    theirs = theirs[:, 0].detach().numpy()
    diff = float(np.abs(theirs - low).max())
    print("auto_LiRPA backward (CROWN)", theirs, "max difference", diff)
    return 0 if diff <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
