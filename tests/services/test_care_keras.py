"""care-keras: CARE on Keras in the TensorFlow environment (sdk-tf layer + pyswarms). The
service runs in its own environment; the conformance suite drives it as a local process and a
worker in the same environment checks the core step on a tiny Keras net with a planted neuron."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fixbench.catalog import load_manifest
from fixbench.catalog.environments import Environments
from fixbench.conformance import run_service_conformance

REPO = Path(__file__).resolve().parents[2]
SERVICE = REPO / "services" / "care-keras"
SMALL = {"particles": 6, "iterations": 8, "steps": 3}

WORKER = r'''
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path.insert(0, sys.argv[1])
import numpy as np, keras
from care_keras import CareConfig, KerasSplit, SplitError, causal_effects, repair
rng = np.random.default_rng(0)
# h = relu(x @ W1); neuron 2 alone decides class 1 vs 0, the others carry noise-free zeros.
def build():
    inp = keras.Input((4,))
    hid = keras.layers.Dense(6, activation="relu", name="hidden")(inp)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="head")(hid))
    w1 = np.zeros((4, 6), np.float32); w1[0, 2] = 1.0; w1[1, 0] = 0.1
    w2 = np.zeros((6, 2), np.float32); w2[2, 1] = 4.0
    model.get_layer("hidden").set_weights([w1, np.zeros(6, np.float32)])
    model.get_layer("head").set_weights([w2, np.array([1.0, 0.0], np.float32)])
    return model, inp
model, inp = build()
x = rng.random((40, 4)).astype(np.float32); y = (x[:, 0] > 0.5).astype(np.int64)
split = KerasSplit(model, 1)
h = split.features(x)
eff = causal_effects(split, h, y, 4, h.min(0), h.max(0))
res = [repair(model, x, y, CareConfig(particles=6, iterations=10, neurons=2), seed=3) for _ in range(1)]
again = repair(build()[0], x, y, CareConfig(particles=6, iterations=10, neurons=2), seed=3)
try:
    single = keras.Model(inp, keras.layers.Dense(2, name="only")(inp)); KerasSplit(single, 1); refused = ""
except SplitError as exc:
    refused = str(exc)
print("RESULT " + json.dumps({"top": int(np.argmax(eff)), "effects": eff.tolist(), "chosen": res[0].chosen,
      "factors": res[0].factors.tolist(), "again": again.factors.tolist(), "refused": refused}))
'''


@pytest.fixture(scope="module")
def python():
    return Environments().python(load_manifest(SERVICE))


@pytest.mark.slow  # TensorFlow start-up in its own environment
def test_core_step_finds_the_planted_neuron_deterministically(python):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([python, "-c", WORKER, str(SERVICE)], capture_output=True, text=True, timeout=600, env=env)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, done.stdout[-2000:] + done.stderr[-3000:]
    r = json.loads(line[7:])
    # Only neuron 2 reaches the head: it alone has a causal effect on the correct-label probability.
    assert r["top"] == 2 and r["effects"][2] > 0.05, r
    assert all(e == 0.0 for i, e in enumerate(r["effects"]) if i != 2), r
    assert r["chosen"][0] == 2
    assert r["factors"] == r["again"]  # same seed, same factors
    assert "no Dense layer after a hidden layer" in r["refused"]


@pytest.mark.slow
def test_service_passes_the_conformance_suite(python):
    report = run_service_conformance(SERVICE, params=SMALL)
    failures = "\n".join(f"{c.name}: {c.detail}" for c in report.failures)
    assert report.ok, f"{report.summary()}\n{failures}\n--- service log ---\n{report.log_tail}"
