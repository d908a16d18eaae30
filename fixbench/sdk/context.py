"""Everything `repair(ctx)` may use: inputs fetched by digest, seeding, progress, budget,
cancellation, and the ONNX <-> torch bridges."""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from fixbench.arrays import Split, load_split
from fixbench.onnxio import Predictor, load_model
from fixbench.sdk.errors import BudgetExceeded, Cancelled
from fixbench.v1 import repair_pb2

SPLITS = ("train", "valid", "repair")


class RepairContext:
    """Handed to `Approach.check` and `Approach.repair`.

    Attributes: `job` (the RepairJob message), `params` (declared defaults + given values),
    `seed`, `rng` (numpy Generator seeded from the job), `deadline` (time.monotonic() value or
    None), `budget_seconds` (the wall-clock limit), `faulty_training_seconds`,
    `faulty_training_samples` (0 when the job does not say). A search spends a job's budget
    through `fixbench.sdk.budget.TrialBudget.for_job(ctx)`, which also covers sample budgets.
    """

    def __init__(self, job: repair_pb2.RepairJob, params: dict[str, Any], fetch: Callable[[Any], bytes],
                 budget_seconds: float | None, emit: Callable[[repair_pb2.FixResponse], None] | None = None):
        self.job = job
        self.params = params
        self.seed = int(job.seed)
        self.rng = np.random.default_rng(self.seed)
        self.faulty_training_seconds = float(job.faulty_training_seconds)
        self.faulty_training_samples = int(job.faulty_training_samples)
        self.budget_seconds = budget_seconds
        self.start_clock()
        self._fetch = fetch
        self._emit = emit or (lambda event: None)
        self._cancel_reason: str | None = None
        self._cancel_lock = threading.Lock()
        self._splits: dict[str, Split] = {}

    # ---- inputs -------------------------------------------------------------------------
    @functools.cached_property
    def model_bytes(self) -> bytes:
        return self._fetch(self.job.model)

    @functools.cached_property
    def model(self) -> onnx.ModelProto:
        """The faulty model, parsed and validated."""
        return load_model(self.model_bytes)

    def history(self) -> list[tuple[int, bytes]]:
        """The faulty model's training history: (epoch, ONNX bytes) of the checkpoints taken
        after the epochs before its last, oldest first, fetched by digest; [] when the job
        carries none (e.g. a pretrained model). Cheap to test first: `len(ctx.job.history)`."""
        return [(int(c.epoch), self._fetch(c.model)) for c in sorted(self.job.history, key=lambda c: c.epoch)]

    def has_split(self, name: str) -> bool:
        return name in SPLITS and bool(getattr(self.job.data, name).sha256)

    def split(self, name: str) -> Split:
        """A data split ('train', 'valid' or 'repair'), fetched by digest and cached."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; approaches may use {', '.join(SPLITS)} (never test)")
        if name not in self._splits:
            digest = getattr(self.job.data, name)
            if not digest.sha256:
                raise ValueError(f"the job carries no {name} split")
            self._splits[name] = Split(*load_split(self._fetch(digest)))
        return self._splits[name]

    @property
    def recipe(self):
        """The faulty model's training recipe as a fixbench.zoo.Recipe, or None."""
        if not self.job.HasField("recipe") or not self.job.recipe.architecture:
            return None
        from fixbench.zoo.recipe import Recipe

        return Recipe.from_proto(self.job.recipe)

    # ---- helpers ------------------------------------------------------------------------
    def predictor(self, model_bytes: bytes | None = None) -> Predictor:
        return Predictor(self.model_bytes if model_bytes is None else model_bytes)

    @functools.cached_property
    def original_predictor(self) -> Predictor:
        return Predictor(self.model_bytes)

    def failing_mask(self, split: str = "repair") -> np.ndarray:
        """True for the inputs of `split` that the faulty model misclassifies."""
        s = self.split(split)
        return self.original_predictor.predict(s.x) != s.y

    def torch_model(self):
        """The faulty model as a torch nn.Module (onnx2torch)."""
        from fixbench.onnxio.torch_bridge import onnx_to_torch

        return onnx_to_torch(self.model)

    def export(self, module, example_input=None) -> bytes:
        """A torch module as ONNX bytes, keeping the faulty model's input/output names."""
        import torch

        from fixbench.onnxio.torch_bridge import torch_to_onnx_bytes

        if example_input is None:
            shape = [1] + [int(d) for d in self.job.data.input_shape]
            example_input = torch.zeros(shape, dtype=torch.float32)
        graph = self.model.graph
        init = {t.name for t in graph.initializer}
        input_name = next(i.name for i in graph.input if i.name not in init)
        return torch_to_onnx_bytes(module, example_input, input_name=input_name, output_name=graph.output[0].name)

    # ---- progress, budget, cancellation ---------------------------------------------------
    def start_clock(self) -> None:
        """Starts the budget now (the SDK calls it when the repair actually starts)."""
        self.started = time.monotonic()
        self.deadline = None if self.budget_seconds is None else self.started + self.budget_seconds

    def progress(self, fraction: float, stage: str = "", message: str = "", **metrics: float) -> None:
        """Reports progress (fraction in [0, 1] or -1); raises Cancelled when the job was
        cancelled. It does not raise when the budget runs out: the approach sees that through
        `should_stop()` and returns its best model so far (the SDK cuts off a repair that
        overruns its budget by more than the grace period). `check()` raises for both."""
        self._emit(repair_pb2.FixResponse(progress=repair_pb2.Progress(
            fraction=float(fraction), stage=stage, message=message, metrics={k: float(v) for k, v in metrics.items()},
        )))
        if self._cancel_reason is not None:
            raise Cancelled(self._cancel_reason)

    def log(self, text: str) -> None:
        self._emit(repair_pb2.FixResponse(log=str(text)))

    def remaining(self) -> float:
        """Seconds of budget left (inf without a budget)."""
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def should_stop(self) -> bool:
        """True once the budget is spent or the job was cancelled: search loops stop and
        return their best result so far."""
        return self._cancel_reason is not None or self.remaining() <= 0

    def check(self) -> None:
        """Raises Cancelled or BudgetExceeded when the job must stop now."""
        if self._cancel_reason is not None:
            raise Cancelled(self._cancel_reason)
        if self.remaining() <= 0:
            raise BudgetExceeded(f"the budget of {self.budget_seconds:.1f} s ran out")

    def cancel(self, reason: str) -> None:
        with self._cancel_lock:
            if self._cancel_reason is None:
                self._cancel_reason = reason

    @property
    def cancelled(self) -> bool:
        return self._cancel_reason is not None


def seed_everything(seed: int, uses_torch: bool) -> None:
    """Seeds Python, numpy and (when the approach uses it) torch from the job seed."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    if uses_torch:
        import torch

        torch.manual_seed(seed)
