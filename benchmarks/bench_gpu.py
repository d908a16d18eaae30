"""The evaluator's scoring on CPU and on the GPU, side by side (issue 23 item 5).

Scores one LeNet-like model with `evaluator.properties.evaluate(..., ["accuracy"])` in
samples/s, once with FIXBENCH_DEVICE=cpu (onnxruntime's CPU provider) and once with the
device the evaluator picks by itself (onnxruntime-gpu's CUDA provider when this build has
it). Where there is no CUDA provider it prints one line saying so and why, and exits 0:
the GPU figure needs `onnxruntime-gpu` and a visible device (the GPU compose override).

Run: `.venv/bin/python benchmarks/bench_gpu.py [--samples N] [--repeats R]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from benchmarks.bench_evaluator import LeNetLike  # noqa: E402
from evaluator.properties import _ORIGINALS, evaluate  # noqa: E402
from fixbench.onnxio import Predictor, execution_provider  # noqa: E402
from fixbench.onnxio.torch_bridge import torch_to_onnx_bytes  # noqa: E402
from fixbench.sdk.server import torch_device  # noqa: E402


def samples_per_second(model: bytes, x: np.ndarray, y: np.ndarray, repeats: int) -> tuple[float, str]:
    """Best of `repeats` cold scorings (the original's cached scores cleared each time), and
    the provider the evaluator's session really ran on."""
    best = float("inf")
    for _ in range(repeats):
        _ORIGINALS.clear()
        start = time.perf_counter()
        evaluate(model, model, x, y, properties=["accuracy"])
        best = min(best, time.perf_counter() - start)
    return 2 * len(x) / best, Predictor(model).provider  # both models are scored


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    available = ort.get_available_providers()
    os.environ.pop("FIXBENCH_DEVICE", None)
    auto_provider, auto_torch = execution_provider(), torch_device()
    print(f"onnxruntime providers here: {', '.join(available)}; the evaluator would use {auto_provider}, "
          f"torch services would use {auto_torch or 'no torch'}")
    if auto_provider != "CUDAExecutionProvider":
        why = "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)" \
            if "CUDAExecutionProvider" not in available else "FIXBENCH_DEVICE forces the CPU"
        print(f"GPU benchmark SKIPPED: {why}; torch.cuda.is_available() = {torch.cuda.is_available()}. "
              "Run it where the GPU compose override gives the evaluator a device.")
        return
    torch.manual_seed(0)
    model = torch_to_onnx_bytes(LeNetLike().eval(), torch.zeros(2, 1, 28, 28))
    rng = np.random.default_rng(0)
    x = rng.random((args.samples, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, args.samples)
    os.environ["FIXBENCH_DEVICE"] = "cpu"
    cpu, cpu_provider = samples_per_second(model, x, y, args.repeats)
    os.environ.pop("FIXBENCH_DEVICE")
    gpu, gpu_provider = samples_per_second(model, x, y, args.repeats)
    print(f"evaluator scoring, LeNet-like, {args.samples} samples x 2 models, best of {args.repeats}")
    print(f"  CPU ({cpu_provider})  {cpu:10.0f} samples/s")
    print(f"  GPU ({gpu_provider})  {gpu:10.0f} samples/s   speed-up {gpu / cpu:.1f}x")


if __name__ == "__main__":
    main()
