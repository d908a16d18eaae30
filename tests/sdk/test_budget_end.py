"""Issue 18 item 6: when the budget ends, an approach that has a usable model returns it.
`ctx.progress()` reports (and honours a cancel) but never raises for the budget: loops test
`ctx.should_stop()` and hand back their best result so far."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from google.protobuf import struct_pb2
from onnx import numpy_helper

from fixbench.arrays import npz_bytes
from fixbench.grpcutil import Server, channel
from fixbench.sdk import Approach, Outcome
from fixbench.sdk import server as sdk_server
from fixbench.v1 import repair_pb2, repair_pb2_grpc
from tests.conftest import blob_dataset, dense_classifier
from tests.sdk.test_sdk_server import S, run_fix


class EpochTrainer(Approach):
    """Like finetune: one epoch at a time, progress after each, the best model kept."""

    name, version, level = "epochs", "1.0.0", "neuron"
    fault_families = ("misclassification",)
    uses_torch = False

    def repair(self, ctx):
        best = None
        for epoch in range(100):
            time.sleep(0.1)
            model = onnx.ModelProto()
            model.CopyFrom(ctx.model)
            w = numpy_helper.to_array(model.graph.initializer[0]).copy()
            w[3, :] = 0.0
            model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "W"))
            best = model
            ctx.progress((epoch + 1) / 100, "train", f"epoch {epoch}")
            if ctx.should_stop():
                break
        return Outcome(model=best, message=f"best of {epoch + 1} epoch(s)")


@pytest.fixture
def trainer(store, tmp_path):
    store_server, _, client = store
    w = np.zeros((4, 3), np.float32)
    w[0, 0] = w[1, 1] = w[2, 2] = 1.0
    w[3, 0] = 2.0
    faulty = client.upload_bytes(dense_classifier(w, np.zeros(3, np.float32)).SerializeToString())
    x, y = blob_dataset(0)
    x[:, 3] = np.abs(x[:, 3]) * 2
    split = client.upload_bytes(npz_bytes({"x": x, "y": y}))
    servicer = sdk_server.RepairServicer(EpochTrainer, store_server.address, str(tmp_path / "svc-cache"))
    server = Server([lambda s: repair_pb2_grpc.add_RepairServicer_to_server(servicer, s)], ["Repair"])
    ch = channel(server.address)

    def job(budget):
        return repair_pb2.RepairJob(model=faulty, params=struct_pb2.Struct(), seed=1,
                                    budget=repair_pb2.Budget(wall_seconds=budget),
                                    data=repair_pb2.DatasetRef(repair=split, valid=split, input_shape=[4], num_classes=3))

    yield repair_pb2_grpc.RepairStub(ch), job
    ch.close()
    server.stop(0)


def test_the_best_model_so_far_is_returned_when_the_budget_ends(trainer):
    stub, job = trainer
    _, result = run_fix(stub, job(0.35))
    assert result.status == S.REPAIR_STATUS_REPAIRED, result.message
    assert result.message.startswith("best of") and int(result.message.split()[2]) < 10
