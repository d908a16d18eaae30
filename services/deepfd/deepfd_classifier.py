"""DeepFD's diagnosis step: multi-label classifiers over the run features, trained at service
start from the shipped feature table (training_set.csv, built by benchmarks/
deepfd_training_set.py) — deterministic for the seed, and no pickled model is ever loaded.

DeepFD trains K-nearest neighbours, a decision tree and a random forest; here the three vote
by averaging their per-label probabilities, and the fault types are ranked by that average."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from deepfd_features import FEATURE_NAMES, LABEL_FIELDS, LABELS
from sklearn.ensemble import RandomForestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

TABLE = Path(__file__).resolve().parent / "training_set.csv"


@dataclass
class Table:
    subjects: np.ndarray
    x: np.ndarray
    y: np.ndarray  # (n, 5) 0/1 per DeepFD label


def load_table(path: Path = TABLE) -> Table:
    """The feature table; a missing or malformed file is a clear error."""
    if not path.is_file():
        raise FileNotFoundError(f"DeepFD's feature table {path} is missing; build it with benchmarks/deepfd_training_set.py")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        expected = [f"lb_{lb}" for lb in LABELS] + list(FEATURE_NAMES)
        if header[5:] != expected:
            raise ValueError(f"{path}: the columns do not match deepfd_features (rebuild the table)")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: the feature table has no rows")
    subjects = np.array([r[0] for r in rows])
    y = np.array([[int(v) for v in r[5:10]] for r in rows], dtype=np.int64)
    x = np.array([[float(v) for v in r[10:]] for r in rows], dtype=np.float64)
    return Table(subjects, x, y)


class FaultClassifier:
    """Three multi-label classifiers, soft-voting per DeepFD label."""

    def __init__(self, seed: int = 0):
        self.models = [
            DecisionTreeClassifier(random_state=seed),
            RandomForestClassifier(n_estimators=100, random_state=seed),
            make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=3)),
        ]

    def fit(self, x: np.ndarray, y: np.ndarray) -> FaultClassifier:
        for m in self.models:
            m.fit(x, y)
        return self

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(n, 5) mean probability that each label applies."""
        x = np.atleast_2d(x)
        total = np.zeros((len(x), len(LABELS)))
        for m in self.models:
            per_label = m.predict_proba(x)  # a list: one (n, classes) array per label
            for j, probs in enumerate(per_label):
                classes = list(m.classes_[j]) if not hasattr(m, "steps") else list(m.steps[-1][1].classes_[j])
                total[:, j] += probs[:, classes.index(1)] if 1 in classes else 0.0
        return total / len(self.models)


def ranked_labels(probs: np.ndarray) -> list[tuple[str, float]]:
    """Labels by decreasing probability (label order breaks ties)."""
    order = sorted(range(len(LABELS)), key=lambda j: (-probs[j], j))
    return [(LABELS[j], float(probs[j])) for j in order]


def ranked_fields(labels: list[tuple[str, float]], recipe=None) -> list[tuple[str, str, float]]:
    """(field, label, probability) in rank order; for 'act' the output activation comes first
    when the recipe's is not softmax (where an activation fault usually sits then)."""
    out = []
    for label, p in labels:
        fields = LABEL_FIELDS[label]
        if label == "act" and recipe is not None and recipe.last_activation != "softmax":
            fields = ("last_activation", "activation")
        out += [(f, label, p) for f in fields]
    return out


def held_out_scores(table: Table, held_out: str, seed: int = 0) -> dict[str, float]:
    """Train on every other subject, test on `held_out`: exact-match accuracy of the label
    sets, mean per-label accuracy, and top-1 label hit on the faulty runs."""
    train = table.subjects != held_out
    test = ~train
    if not test.any() or not train.any():
        raise ValueError(f"subject {held_out!r} must split the table into two non-empty parts")
    clf = FaultClassifier(seed).fit(table.x[train], table.y[train])
    probs = clf.probabilities(table.x[test])
    pred = (probs >= 0.5).astype(int)
    truth = table.y[test]
    faulty = truth.sum(axis=1) > 0
    top1 = [truth[i, int(np.argmax(probs[i]))] == 1 for i in np.flatnonzero(faulty)]
    return {
        "runs": float(test.sum()),
        "exact_match": float((pred == truth).all(axis=1).mean()),
        "label_accuracy": float((pred == truth).mean()),
        "top1_hit_on_faulty": float(np.mean(top1)) if top1 else float("nan"),
    }
