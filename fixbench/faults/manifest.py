"""Suite manifests: `<bench>/<suite>@<scale>.manifest.json`, one entry per built fault.

A manifest is what a study or a person reads to know what a built suite holds without opening
every bundle: digests, dataset, model, family, operator, ground truth, training time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fixbench.faults.bundle import Fault, FaultError
from fixbench.faults.errors import UnknownFaultError

MANIFEST_SUFFIX = ".manifest.json"


def scale_label(scale: float) -> str:
    """The scale as it appears in a manifest's name (0.2 → "0.2", 1.0 → "1")."""
    return f"{float(scale):g}"


def manifest_path(bench_dir: str | Path, suite: str, scale: float) -> Path:
    return Path(bench_dir) / f"{suite}@{scale_label(scale)}{MANIFEST_SUFFIX}"


def manifest_entry(fault: Fault, bench_dir: str | Path | None = None) -> dict[str, Any]:
    """One fault's entry: identity, data, model, family, operator, ground truth, train time,
    metrics, digests and where the bundle lies (relative to the bench folder when given)."""
    where = fault.root
    if where is not None and bench_dir is not None:
        try:
            where = where.resolve().relative_to(Path(bench_dir).resolve())
        except ValueError:
            pass
    return {
        "id": fault.id,
        "family": fault.family,
        "dataset": fault.dataset,
        "stand_in": fault.stand_in,
        "architecture": fault.architecture,
        "description": fault.description,
        "input_shape": fault.input_shape,
        "num_classes": fault.num_classes,
        "sensitive_attribute": fault.sensitive_attribute,
        "seed": fault.seed,
        "operator": fault.operator,
        "recipe": fault.recipe,
        "ground_truth": fault.ground_truth,
        "train_seconds": fault.train_seconds,
        "metrics": fault.metrics,
        "digests": fault.digests,
        "history": fault.history,
        "path": None if where is None else str(where),
    }


def write_manifest(bench_dir: str | Path, suite: str, scale: float, faults: Iterable[Fault],
                   dropped: Iterable[dict[str, Any]] = ()) -> Path:
    """Writes the suite's manifest atomically (temp file + rename) and returns its path.
    `dropped`: {id, reason} of each fault of the suite that this scale cannot build (e.g. a
    mutant not statistically killed), so the manifest says what the suite lacks and why."""
    path = manifest_path(bench_dir, suite, scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"suite": suite, "scale": float(scale), "faults": [manifest_entry(f, bench_dir) for f in faults],
            "dropped": [dict(d) for d in dropped]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    """A manifest's content; a missing or malformed file raises FaultError naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FaultError(f"{path}: no such manifest") from None
    except json.JSONDecodeError as exc:
        raise FaultError(f"{path}: not a valid manifest ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("faults"), list):
        raise FaultError(f"{path}: not a valid manifest (no 'faults' list)")
    return data


def list_manifests(bench_dir: str | Path) -> list[Path]:
    """The manifests of every suite built in `bench_dir`, sorted by name."""
    bench = Path(bench_dir)
    return sorted(bench.glob(f"*{MANIFEST_SUFFIX}")) if bench.is_dir() else []


def built_faults(bench_dir: str | Path) -> list[Fault]:
    """Every complete fault bundle in the cache (bundles without fault.json are skipped)."""
    folder = Path(bench_dir) / "faults"
    if not folder.is_dir():
        return []
    out = []
    for root in sorted(folder.iterdir()):
        if (root / "fault.json").exists():
            out.append(Fault.load(root))
    return out


def find_fault_entry(bench_dir: str | Path, fault_id: str) -> list[dict[str, Any]]:
    """Manifest entries of `fault_id` in the built suites (one per suite@scale holding it,
    each with "suite" and "scale" added); unknown ids raise `UnknownFaultError`."""
    hits = []
    for path in list_manifests(bench_dir):
        data = read_manifest(path)
        for entry in data["faults"]:
            if entry.get("id") == fault_id:
                hits.append({"suite": data.get("suite"), "scale": data.get("scale"), **entry})
    if not hits:
        known = sorted({e.get("id") for p in list_manifests(bench_dir) for e in read_manifest(p)["faults"]})
        raise UnknownFaultError(
            f"no built fault {fault_id!r} in {bench_dir}; built: {', '.join(known) or 'none (run fixbench bench build)'}"
        )
    return hits
