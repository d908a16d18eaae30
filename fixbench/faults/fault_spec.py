"""`FaultRecipe`: how to build one fault of a suite, and its content key for the build cache."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fixbench.faults.bundle import FAMILIES

# Bump when a builder's output for the same FaultRecipe changes, so cached faults rebuild.
# The misclassification version stays "1" so that the quick suite's cached fault survives.
BUILDER_VERSIONS: dict[str, str] = {"misclassification": "1", "training_recipe": "1"}

# Checkpoints of the epochs before the last that a misclassification bundle keeps (its
# training history, which NeuRecover-style approaches need), unless a recipe says otherwise.
DEFAULT_HISTORY_EPOCHS = 2

# A builder's progress report: (fraction of this fault done, what it is doing).
BuildProgress = Callable[[float, str], None]


@dataclass(frozen=True)
class FaultRecipe:
    """How to build one fault.

    overrides: changes to the architecture's default training recipe (the *original* recipe
    of a training-recipe fault). causes: injected causes of a misclassification fault (see
    `causes.Causes`). operator + candidates: a training-recipe fault's mutation operator and
    the parameter sets to try, in order, until one is statistically killed. scale_factor:
    this fault's data (and repeat count) scale relative to the suite's scale, so one tiny
    fault can live in a suite built at full scale. history_epochs: ONNX checkpoints of the
    epochs before the last kept in the bundle (None: DEFAULT_HISTORY_EPOCHS for a
    misclassification fault, 0 otherwise; 0 stands for a model without training history).
    """

    id: str
    family: str
    dataset: str
    architecture: str
    seed: int = 0
    overrides: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    causes: Mapping[str, Any] = field(default_factory=dict)
    operator: str | None = None
    candidates: tuple[Mapping[str, Any], ...] = ()
    scale_factor: float = 1.0
    history_epochs: int | None = None

    def __post_init__(self) -> None:
        if not self.id or any(c in self.id for c in "/\\@ "):
            raise ValueError(f"fault id: {self.id!r} must be non-empty without '/', '\\', '@' or spaces")
        if self.family not in FAMILIES:
            raise ValueError(f"fault {self.id}: family {self.family!r} is not one of {FAMILIES}")
        if self.family == "training_recipe" and not self.operator:
            raise ValueError(f"fault {self.id}: a training_recipe fault needs an operator")
        if self.family == "misclassification" and (self.operator or self.candidates):
            raise ValueError(f"fault {self.id}: operator/candidates belong to training_recipe faults")
        if self.family == "training_recipe" and self.causes:
            raise ValueError(f"fault {self.id}: causes belong to misclassification faults (use data operators)")
        if (
            isinstance(self.scale_factor, bool)
            or not isinstance(self.scale_factor, (int, float))
            or not self.scale_factor > 0
        ):
            raise ValueError(f"fault {self.id}: scale_factor must be a positive number, got {self.scale_factor!r}")
        object.__setattr__(self, "candidates", tuple(dict(c) for c in self.candidates))
        if self.history_epochs is not None:
            if isinstance(self.history_epochs, bool) or not isinstance(self.history_epochs, int) or self.history_epochs < 0:
                raise ValueError(f"fault {self.id}: history_epochs must be a non-negative integer, got {self.history_epochs!r}")
            if self.history_epochs and self.family != "misclassification":
                raise ValueError(f"fault {self.id}: only misclassification faults keep a training history")

    def effective_history_epochs(self) -> int:
        """How many earlier-epoch checkpoints the bundle keeps."""
        if self.history_epochs is not None:
            return int(self.history_epochs)
        return DEFAULT_HISTORY_EPOCHS if self.family == "misclassification" else 0

    def effective_scale(self, scale: float) -> float:
        """The scale this fault is built at when its suite is built at `scale`."""
        return float(scale) * float(self.scale_factor)

    def build_key(self, scale: float) -> str:
        """A content hash of everything the build depends on (keys appear only when set, so
        older cache entries keep their key)."""
        content: dict[str, Any] = {
            "v": BUILDER_VERSIONS[self.family],
            "id": self.id,
            "family": self.family,
            "dataset": self.dataset,
            "architecture": self.architecture,
            "seed": self.seed,
            "overrides": dict(self.overrides),
            "scale": scale,
        }
        if self.causes:
            content["causes"] = dict(self.causes)
        if self.operator:
            content["operator"] = self.operator
            content["candidates"] = [dict(c) for c in self.candidates]
        if self.scale_factor != 1.0:
            content["scale_factor"] = float(self.scale_factor)
        # The kept checkpoints are bundle content: a bundle with them is another build.
        if self.effective_history_epochs():
            content["history_epochs"] = self.effective_history_epochs()
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
