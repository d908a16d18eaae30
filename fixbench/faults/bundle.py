"""A fault on disk: `fault.json` beside the faulty model and its data splits.

<bench>/<fault_id>/fault.json   identity, family, dataset, recipe, ground truth, digests
<bench>/<fault_id>/model.onnx   the faulty model
<bench>/<fault_id>/{train,valid,repair,test}.npz
<bench>/<fault_id>/history/epoch-<n>.onnx   optional: checkpoints of the epochs before the last
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fixbench.artifacts.digest import digest_of_file

FAMILIES = ("misclassification", "training_recipe")
FILES = ("model", "train", "valid", "repair", "test")


class FaultError(ValueError):
    """A fault bundle that is missing, incomplete or does not match its digests."""


@dataclass
class Fault:
    id: str
    family: str
    dataset: str
    architecture: str
    description: str
    input_shape: list[int]
    num_classes: int
    seed: int
    train_seconds: float
    stand_in: bool = False
    sensitive_attribute: str | None = None
    operator: str | None = None
    recipe: dict[str, Any] | None = None
    ground_truth: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    digests: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Training history: {"epoch", "file" (relative to the bundle), "sha256", "size_bytes"} per
    # kept checkpoint, oldest first; empty when the fault keeps none.
    history: list[dict[str, Any]] = field(default_factory=list)
    root: Path | None = None

    def path(self, name: str) -> Path:
        if name not in FILES:
            raise KeyError(name)
        assert self.root is not None
        return self.root / ("model.onnx" if name == "model" else f"{name}.npz")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("root")
        return data

    def save(self) -> None:
        """Computes the digests of the files and writes fault.json last (atomically), so a
        bundle without fault.json is incomplete and never used."""
        assert self.root is not None
        self.digests = {}
        for name in FILES:
            d = digest_of_file(self.path(name))
            self.digests[name] = {"sha256": d.sha256, "size_bytes": d.size_bytes}
        for entry in self.history:
            d = digest_of_file(self.root / entry["file"])
            entry.update(sha256=d.sha256, size_bytes=d.size_bytes)
        tmp = self.root / ".fault.json.tmp"
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        tmp.replace(self.root / "fault.json")

    @classmethod
    def load(cls, root: str | Path, verify: bool = False) -> Fault:
        root = Path(root)
        meta = root / "fault.json"
        if not meta.exists():
            raise FaultError(f"{root} is not a built fault (no fault.json)")
        try:
            data = json.loads(meta.read_text())
            fault = cls(**data, root=root)
        except (json.JSONDecodeError, TypeError) as exc:
            raise FaultError(f"{meta} is not a valid fault description: {exc}") from exc
        if fault.family not in FAMILIES:
            raise FaultError(f"{meta}: unknown family {fault.family!r}; known: {FAMILIES}")
        for name in FILES:
            if not fault.path(name).exists():
                raise FaultError(f"fault {fault.id} lacks {fault.path(name).name}")
        for entry in fault.history:
            if not (root / entry["file"]).exists():
                raise FaultError(f"fault {fault.id} lacks its history checkpoint {entry['file']}")
        if verify:
            for name in FILES:
                d = digest_of_file(fault.path(name))
                if d.sha256 != fault.digests.get(name, {}).get("sha256"):
                    raise FaultError(f"fault {fault.id}: {fault.path(name).name} does not match its recorded digest")
            for entry in fault.history:
                if digest_of_file(root / entry["file"]).sha256 != entry.get("sha256"):
                    raise FaultError(f"fault {fault.id}: {entry['file']} does not match its recorded digest")
        return fault
