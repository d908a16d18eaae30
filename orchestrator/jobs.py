"""Jobs: one (approach, fault, seed) with its content key and its RepairJob message."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from google.protobuf import struct_pb2

from fixbench.faults.bundle import Fault
from fixbench.security.scope import load_key, mint
from fixbench.v1 import repair_pb2
from fixbench.v1.common_pb2 import Digest
from orchestrator.spec import ApproachSpec, StudySpec


def job_key(approach: str, version: str, fault: Fault, params: dict, seed: int, spec: StudySpec) -> str:
    """Content hash of everything that decides a job's outcome: the same key means the same
    job, so a resumed study neither loses nor repeats it."""
    content = {
        "approach": approach,
        "version": version,
        "fault": {name: d["sha256"] for name, d in sorted(fault.digests.items())},
        # Only when the fault keeps a history, so that the keys of older jobs stay as they were.
        **({"history": [e["sha256"] for e in fault.history]} if fault.history else {}),
        "params": params,
        "seed": seed,
        "budget": spec.budget.key_content(),
        "evaluation": spec.evaluation.model_dump(),
    }
    # Whatever sets the budget is part of the job: the measured training time a
    # training_time_multiple multiplies (it differs from build to build), the sample count a
    # training_samples_multiple multiplies.
    if spec.budget.training_time_multiple is not None:
        content["faulty_training_seconds"] = float(fault.train_seconds)
    if spec.budget.training_samples_multiple is not None:
        content["faulty_training_samples"] = faulty_training_samples(fault)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


# What one job may upload to the store under its credential: a few repaired models (retries,
# an approach that changes the architecture) plus a margin.
WRITE_QUOTA_MODELS = 8
WRITE_QUOTA_EXTRA_BYTES = 64 * 1024 * 1024


def faulty_training_samples(fault: Fault) -> int:
    """Samples the faulty model's training saw: its recipe's epochs × the training split's
    size (0 when the fault records no recipe or no split size)."""
    epochs = int((fault.recipe or {}).get("epochs") or 0)
    train_size = int((fault.metrics or {}).get("train_size") or 0)
    return epochs * train_size


def digest(fault: Fault, name: str) -> Digest:
    d = fault.digests[name]
    return Digest(sha256=d["sha256"], size_bytes=int(d["size_bytes"]))


def recipe_message(recipe: dict | None) -> repair_pb2.TrainingRecipe | None:
    if not recipe:
        return None
    from fixbench.zoo.recipe import Recipe

    return Recipe.from_dict(recipe).to_proto()


@dataclass
class Job:
    key: str
    approach: ApproachSpec
    version: str
    fault: Fault
    seed: int
    message: repair_pb2.RepairJob


def make_job(approach: ApproachSpec, version: str, fault: Fault, seed: int, spec: StudySpec) -> Job:
    key = job_key(approach.name, version, fault, approach.params, seed, spec)
    params = struct_pb2.Struct()
    params.update(approach.params)
    msg = repair_pb2.RepairJob(
        job_id=key,
        fault_id=fault.id,
        fault_family=fault.family,
        model=digest(fault, "model"),
        data=repair_pb2.DatasetRef(
            name=fault.dataset,
            train=digest(fault, "train"),
            valid=digest(fault, "valid"),
            repair=digest(fault, "repair"),
            input_shape=fault.input_shape,
            num_classes=fault.num_classes,
            sensitive_attribute=fault.sensitive_attribute or "",
            stand_in=fault.stand_in,
        ),
        faulty_training_seconds=fault.train_seconds,
        faulty_training_samples=faulty_training_samples(fault),
        params=params,
        seed=seed,
        budget=repair_pb2.Budget(
            wall_seconds=spec.budget.wall_seconds or 0.0,
            training_time_multiple=spec.budget.training_time_multiple or 0.0,
            training_samples_multiple=spec.budget.training_samples_multiple or 0.0,
            max_trials=spec.budget.max_trials,
        ),
    )
    recipe = recipe_message(fault.recipe)
    if recipe is not None:
        msg.recipe.CopyFrom(recipe)
    for entry in fault.history:
        msg.history.add(epoch=int(entry["epoch"]),
                        model=Digest(sha256=entry["sha256"], size_bytes=int(entry["size_bytes"])))
    key_bytes = load_key()
    if key_bytes is not None:
        # The job may read its own inputs (never the test split) and write a few models' worth.
        readable = [msg.model.sha256, msg.data.train.sha256, msg.data.valid.sha256, msg.data.repair.sha256,
                    *(h.model.sha256 for h in msg.history)]
        msg.store_credential = mint(key_bytes, key, [d for d in readable if d],
                                    write_bytes=WRITE_QUOTA_MODELS * msg.model.size_bytes + WRITE_QUOTA_EXTRA_BYTES)
    return Job(key, approach, version, fault, seed, msg)
