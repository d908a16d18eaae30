"""A tiny training-recipe fault for the recipe-search services' tests (hebo, bohb): an MLP on
sklearn digits trained with SGD at lr = 5 (it learns nothing), and a RepairContext over
in-memory blobs so that a test can call repair() directly."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from fixbench.arrays import npz_bytes
from fixbench.artifacts.digest import digest_of_bytes
from fixbench.data import load_splits
from fixbench.sdk.context import RepairContext
from fixbench.v1 import repair_pb2
from fixbench.zoo import default_recipe, train

SERVICES = Path(__file__).resolve().parents[2] / "services"


def load_service(folder: str, module_name: str):
    """A service's approach.py loaded by path (folder names may hold hyphens)."""
    spec = importlib.util.spec_from_file_location(module_name, SERVICES / folder / "approach.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def digits_fault(epochs: int = 4):
    """(splits, faulty recipe, faulty TrainResult)."""
    digits = load_splits("digits", seed=0)
    recipe = default_recipe("mlp").replace(epochs=epochs, optimizer="sgd", learning_rate=5.0)
    faulty = train(recipe, (digits.train.x, digits.train.y), (digits.valid.x, digits.valid.y), seed=0,
                   num_classes=10, threads=1)
    return digits, recipe, faulty


def direct_context(approach_cls, digits, recipe, faulty, seed: int, max_trials: int, params=None,
                   family: str = "training_recipe", wall_seconds: float = 300.0) -> RepairContext:
    blobs, refs = {}, {}
    for name, data in [("model", faulty.onnx_bytes)] + [
        (s, npz_bytes(getattr(digits, s).arrays())) for s in ("train", "valid", "repair")
    ]:
        digest = digest_of_bytes(data)
        blobs[digest.sha256] = data
        refs[name] = digest
    job = repair_pb2.RepairJob(
        job_id="direct", fault_family=family, model=refs["model"], seed=seed,
        data=repair_pb2.DatasetRef(name="digits", train=refs["train"], valid=refs["valid"], repair=refs["repair"],
                                   input_shape=[1, 8, 8], num_classes=10),
        budget=repair_pb2.Budget(wall_seconds=wall_seconds, max_trials=max_trials),
    )
    job.recipe.CopyFrom(recipe.to_proto())
    resolved = approach_cls.resolve_params(params or {})
    logs: list[str] = []

    def emit(event) -> None:
        if event.WhichOneof("event") == "log":
            logs.append(event.log)

    ctx = RepairContext(job, resolved, lambda d: blobs[d.sha256], wall_seconds, emit)
    ctx.test_logs = logs  # what the service would have streamed as log lines
    return ctx
