"""Builds the DeepFD classifier's training table (services/deepfd/training_set.csv) from faults
the benchmark generates: DeepCrime and DeepFD-analogue mutation operators of
`fixbench.faults.operators` applied to small MLP subjects on sklearn's digits, each mutant
trained with a few seeds under DeepFD's feature monitor. A mutant that trains as well as its
original (validation accuracy within `--margin` of the original's mean) is relabelled "no
fault", as DeepFD relabels runs that reach the satisfying accuracy.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/deepfd_training_set.py

Deterministic for its seeds on CPU (one torch thread). Columns: subject, operator, params,
seed, valid_acc, the five label columns lb_opt … lb_epoch, then the features
(deepfd_features.FEATURE_NAMES).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SERVICE = ROOT / "services" / "deepfd"


def _features_module():
    spec = importlib.util.spec_from_file_location("deepfd_features", SERVICE / "deepfd_features.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# (operator, params, DeepFD label) — the label is what a developer's fix would touch.
MUTATIONS = [
    ("HLR", {"factor": 1000.0}, "lr"), ("HLR", {"factor": 100.0}, "lr"), ("HLR", {"factor": 0.01}, "lr"),
    ("HLR", {"factor": 0.001}, "lr"), ("D4", {"factor": 300.0}, "lr"),
    ("OCH", {"optimizer": "sgd"}, "opt"), ("OCH", {"optimizer": "adadelta"}, "opt"),
    ("OCH", {"optimizer": "adagrad"}, "opt"), ("D9", {"optimizer": "sgd"}, "opt"),
    ("ACH", {"activation": "sigmoid"}, "act"), ("ACH", {"activation": "exponential"}, "act"),
    ("ACH", {"activation": "softsign"}, "act"), ("ACH", {"activation": "hard_sigmoid"}, "act"),
    ("D2", {}, "act"), ("D3", {}, "act"), ("D6", {}, "act"),
    ("LCH", {"loss": "mean_absolute_error"}, "loss"), ("LCH", {"loss": "hinge"}, "loss"),
    ("LCH", {"loss": "mean_absolute_percentage_error"}, "loss"), ("LCH", {"loss": "poisson"}, "loss"),
    ("D1", {"loss": "mean_squared_error"}, "loss"),
    ("HNE", {"factor": 0.125}, "epoch"), ("D7", {"epochs": 1}, "epoch"), ("HNE", {"factor": 0.25}, "epoch"),
]
# Small MLPs on the 8x8 digits: each trains in well under a second on one core.
SUBJECTS = {
    "digits-mlp-64-32": {"hidden_units": (64, 32)},
    "digits-mlp-128": {"hidden_units": (128,)},
    "digits-mlp-64-64-32": {"hidden_units": (64, 64, 32)},
}


def build(out: Path, seeds: int, margin: float, epochs: int) -> int:
    import torch

    from fixbench.data import load_splits
    from fixbench.faults.errors import OperatorNotApplicable
    from fixbench.faults.operators import get_operator
    from fixbench.zoo import TrainingDiverged, default_recipe, train

    feats = _features_module()
    torch.set_num_threads(1)
    digits = load_splits("digits", seed=0)
    train_xy, valid_xy = (digits.train.x, digits.train.y), (digits.valid.x, digits.valid.y)
    rows = []
    for subject, overrides in SUBJECTS.items():
        original = default_recipe("mlp").replace(epochs=epochs, **overrides)
        runs = [("origin", {}, None, original)]
        for op, params, label in MUTATIONS:
            try:
                runs.append((op, params, label, get_operator(op).apply(original, params)))
            except OperatorNotApplicable:
                continue
        original_acc = None
        for op, params, label, recipe in runs:
            for seed in range(seeds):
                monitor = feats.FeatureMonitor(recipe.epochs)
                try:
                    result = train(recipe, train_xy, valid_xy, seed=seed, num_classes=10, on_epoch=monitor)
                    acc = float(result.valid_accuracy or 0.0)
                except TrainingDiverged:
                    acc = 0.0
                rows.append([subject, op, json.dumps(params), seed, acc, label, monitor.rows])
            if op == "origin":
                original_acc = float(np.mean([r[4] for r in rows if r[0] == subject and r[1] == "origin"]))
        for r in rows:
            if r[0] == subject and r[5] is not None and r[4] >= original_acc - margin:
                r[5] = None  # the mutant trains as well as its original: no fault to find
        print(f"{subject}: {len(runs)} recipes x {seeds} seeds, original valid acc {original_acc:.3f}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["subject", "operator", "params", "seed", "valid_acc", *[f"lb_{lb}" for lb in feats.LABELS],
                    *feats.FEATURE_NAMES])
        for subject, op, params, seed, acc, label, epoch_rows in rows:
            labels = [int(label == lb) for lb in feats.LABELS]
            vector = feats.feature_vector(epoch_rows) if epoch_rows else np.zeros(len(feats.FEATURE_NAMES))
            w.writerow([subject, op, params, seed, f"{acc:.6f}", *labels, *(f"{v:.9g}" for v in vector)])
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SERVICE / "training_set.csv")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--margin", type=float, default=0.03)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    started = time.monotonic()
    n = build(args.out, args.seeds, args.margin, args.epochs)
    print(f"{n} runs -> {args.out} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
