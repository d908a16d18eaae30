"""fixbench/sdk/keras_bridge.py on the zoo's MLP, LeNet-5 and a BatchNorm CNN: ONNX -> Keras ->
ONNX keeps predictions (measured: import within 1.7e-7, round trip within
1.8e-7), each step within the parity gate, and a gate that fails is a named
status with the measured difference. TensorFlow lives in the sdk-tf environment (the layer's
own stack, built once by fixbench.catalog.environments), so the bridge runs there in a
subprocess; the models are made here with the zoo's torch builders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fixbench.catalog.environments import Environments
from fixbench.catalog.manifest import ServiceManifest
from fixbench.v1 import repair_pb2

REPO = Path(__file__).resolve().parents[2]
S = repair_pb2.RepairStatus


def test_importing_the_bridge_does_not_import_tensorflow():
    code = "import sys, fixbench.sdk, fixbench.sdk.keras_bridge; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


def test_split_layout_helpers():
    from fixbench.sdk import keras_bridge as kb

    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    xs, ys = kb.keras_split(x, np.array([0, 2]), num_classes=3)
    assert xs.shape == (2, 4, 5, 3) and xs[1, 2, 3, 1] == x[1, 1, 2, 3]
    assert ys.tolist() == [[1, 0, 0], [0, 0, 1]]
    with pytest.raises(ValueError, match="outside"):
        kb.keras_split(x, np.array([0, 3]), num_classes=3)
    tab = np.ones((4, 7), np.float32)
    assert kb.keras_split(tab, np.zeros(4, int))[0].shape == (4, 7)


@pytest.fixture(scope="module")
def bridge_results(tmp_path_factory):
    import torch

    from fixbench.onnxio.torch_bridge import torch_to_onnx_bytes
    from fixbench.zoo.architectures import build_model
    from fixbench.zoo.recipe import Recipe

    folder = tmp_path_factory.mktemp("keras-bridge")
    torch.manual_seed(0)
    specs = {"mlp": Recipe(architecture="mlp", hidden_units=(16,)),
             "lenet5": Recipe(architecture="lenet5"),
             "bncnn": Recipe(architecture="facenet", width_multiplier=0.25, options={"blocks": "2"})}
    for name, recipe in specs.items():
        model = build_model(recipe, (1, 8, 8), 10, seed=0)
        for mod in model.modules():  # BatchNorm statistics away from identity, so they must carry over
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.data.uniform_(0.5, 1.5)
                mod.bias.data.uniform_(-0.2, 0.2)
        (folder / f"{name}.onnx").write_bytes(torch_to_onnx_bytes(model, torch.zeros(1, 1, 8, 8)))
    np.save(folder / "x.npy", np.random.default_rng(0).random((64, 1, 8, 8), dtype=np.float32))
    python = Environments().python(ServiceManifest(name="sdk-tf-bridge", folder=folder, layer="sdk-tf"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "FIXBENCH_THREADS": "1", "OMP_NUM_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([python, str(Path(__file__).with_name("keras_bridge_worker.py")), str(folder)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert done.returncode == 0 and line, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.slow  # TensorFlow in a subprocess: ~15 s of CPU, more on a busy machine
@pytest.mark.parametrize("arch", ["mlp", "lenet5", "bncnn"])
def test_round_trip_keeps_predictions(bridge_results, arch):
    for layout in ("nchw", "nhwc"):
        row = bridge_results[arch][layout]
        assert row["same_predictions"], row
        # Measured: import <= 2e-7, round trip <= 2e-7 (float32 summation order); the gate's
        # default bound is 1e-5 + 1e-5 * max|output|.
        assert row["import_diff"] < 1e-6 and row["roundtrip_diff"] < 1e-6, row
    if arch != "mlp":
        assert bridge_results[arch]["nhwc"]["keras_input"] == [8, 8, 1]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["lenet5", "bncnn"])
def test_a_failed_gate_is_unadaptable_with_the_measured_difference(bridge_results, arch):
    gate = bridge_results[arch]["strict_gate"]
    assert gate is not None, "a zero-tolerance gate let a float32 conversion through"
    assert gate["status"] == S.REPAIR_STATUS_UNADAPTABLE and gate["max_diff"] > 0
    assert f"{gate['max_diff']:.3g}" in gate["message"] and "parity gate" in gate["message"]


@pytest.mark.slow
def test_split_and_export_status_in_the_tf_environment(bridge_results):
    assert bridge_results["split"] == {"x": [64, 8, 8, 1], "y": [64, 10], "same": True}
    status, message = bridge_results["export_status"]
    assert status == S.REPAIR_STATUS_TOOL_ERROR and "ExportParityError" in message and "0.5" in message
    assert bridge_results["import_seen_tf"] is False
