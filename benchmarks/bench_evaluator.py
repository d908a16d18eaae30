"""Speed of the evaluator against the raw tools it wraps, printed side by side as ratios.

1. Scoring: `evaluator.properties.evaluate(..., properties=["accuracy"])` on an original and
   a repaired LeNet-like model, in samples/s, against two raw onnxruntime sessions doing the
   same inference and argmax (session creation included on both sides). Target ≥ 0.9×.
2. PGD: `evaluator.robustness.pgd_linf` on the onnx2torch re-import, in seconds per sample,
   against a plain torch PGD loop on the original nn.Module with the same ε, steps, step size
   and batch. Target ≥ 0.9×.

3. Memory (issue 23 item 4): peak RSS of the evaluator *service* scoring the largest
   stand-in subject, the you2026 suite's DenseNet-121-style model on ImageNet-stand-in images
   (3x32x32, 20 classes; the zoo's architecture and recipe, weights at their seeded
   initialisation: memory depends on the shapes, not on training), on its real test split
   (1,200 images at full scale) and on that split repeated `--memory-multiples` times. Each
   size gets a fresh store and evaluator process, started as the local runtime starts them
   (the store's directory given to the evaluator); the evaluator's peak RSS (VmHWM) and its
   peak anonymous and file-backed resident memory (sampled every 10 ms) are read from /proc.
   Bounded by batching means: the peak stays about the same while the split grows.

Run: `.venv/bin/python benchmarks/bench_evaluator.py [--samples N] [--threads T]`.
Timings take the best of `--repeats` runs (the least disturbed by other processes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Runnable as a plain script from anywhere: the repository root holds `evaluator`/`fixbench`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from evaluator.parity import import_to_torch  # noqa: E402
from evaluator.properties import _ORIGINALS, evaluate  # noqa: E402
from evaluator.robustness import FOOLBOX_REL_STEPSIZE, pgd_linf  # noqa: E402
from fixbench.onnxio import load_model  # noqa: E402
from fixbench.onnxio.torch_bridge import torch_to_onnx_bytes  # noqa: E402


class LeNetLike(torch.nn.Module):
    """LeNet-5's shape on 1x28x28 inputs: two conv/pool stages, three dense layers."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 6, 5, padding=2),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(6, 16, 5),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.classifier = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(16 * 5 * 5, 120),
            torch.nn.ReLU(),
            torch.nn.Linear(120, 84),
            torch.nn.ReLU(),
            torch.nn.Linear(84, 10),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def best_of_interleaved(repeats: int, first, second) -> tuple[float, float]:
    """Smallest wall times of `repeats` calls of first() and second(), alternating them so
    that load from other processes on a shared machine hits both sides alike."""
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for k, fn in enumerate((first, second)):
            start = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - start)
    return best[0], best[1]


def raw_scoring(models: list[bytes], x: np.ndarray, threads: int, batch: int = 512) -> list[np.ndarray]:
    """What the evaluator's scoring does, with nothing but onnxruntime and numpy."""
    preds = []
    for model in models:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        out = np.concatenate([sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])
        preds.append(out.argmax(axis=1))
    return preds


def plain_pgd(module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, step: float, seed: int, batch: int):
    """The textbook PGD L∞ loop (random start, sign step, project, clip to [0, 1])."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(x), batch):
        x0, yb = x[i : i + batch], y[i : i + batch]
        xa = (x0 + (torch.rand(x0.shape, generator=gen) * 2 - 1) * eps).clamp(0, 1)
        for _ in range(steps):
            xa.requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(module(xa), yb, reduction="sum")
            (grad,) = torch.autograd.grad(loss, [xa])
            with torch.no_grad():
                xa = (x0 + (xa + step * grad.sign() - x0).clamp(-eps, eps)).clamp(0, 1)
        out.append(xa.detach())
    return torch.cat(out)


def _proc_kib(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon and RssFile of a process, in KiB (Linux /proc)."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    return out


def densenet_subject() -> tuple[bytes, np.ndarray, np.ndarray]:
    """The you2026 DenseNet-121-style model (ONNX) and the ImageNet stand-in's test split."""
    from fixbench.data.registry import load_splits
    from fixbench.zoo.architectures import build_model
    from fixbench.zoo.defaults import default_recipe

    splits = load_splits("imagenet-standin", 0, 1.0)
    stats = (splits.train.x.mean(axis=0), splits.train.x.std(axis=0) + 1e-3)
    model = build_model(default_recipe("densenet121"), (3, 32, 32), 20, input_stats=stats, seed=0)
    return torch_to_onnx_bytes(model, torch.zeros(2, 3, 32, 32)), splits.test.x, splits.test.y


def _start(name: str, args: list[str], env: dict, tmp: Path, procs: list) -> tuple:
    """A service process on a free port, as the local runtime starts it; (process, address)."""
    import subprocess

    from fixbench.grpcutil import wait_healthy

    port_file = tmp / f"{name}.port"
    proc = subprocess.Popen([sys.executable, *args, "--port", "0", "--port-file", str(port_file)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)
    procs.append(proc)
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with code {proc.returncode}")
        time.sleep(0.05)
    address = f"127.0.0.1:{int(port_file.read_text())}"
    wait_healthy(address)
    return proc, address


def _memory_row(model: bytes, x: np.ndarray, y: np.ndarray, multiple: int, threads: int) -> dict:
    """Fresh store and evaluator processes; the evaluator's memory while it scores the split
    repeated `multiple` times."""
    import shutil
    import tempfile
    import threading

    from fixbench.arrays import npz_bytes
    from fixbench.artifacts.client import STORE_DIR_ENV, ArtifactClient
    from fixbench.grpcutil import channel
    from fixbench.v1 import evaluator_pb2, evaluator_pb2_grpc

    tmp = Path(tempfile.mkdtemp(prefix="fixbench-mem-"))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), FIXBENCH_THREADS=str(threads),
               FIXBENCH_DEVICE="cpu")
    procs: list = []
    try:
        _, store = _start("store", ["-m", "fixbench.artifacts", "--root", str(tmp / "store")], env, tmp, procs)
        evaluator, address = _start("evaluator", ["-m", "evaluator", "--store", store, "--cache-dir", str(tmp / "cache")],
                                    {**env, STORE_DIR_ENV: str(tmp / "store")}, tmp, procs)
        split = npz_bytes({"x": np.tile(x, (multiple, 1, 1, 1)), "y": np.tile(y, multiple)})
        with ArtifactClient(store, tmp / "bench-cache", store_dir=None) as client:
            model_digest, test_digest = client.upload_bytes(model), client.upload_bytes(split)
        split_mb = len(split) / 1e6
        del split
        at_start = _proc_kib(evaluator.pid)
        peaks = {"RssAnon": 0, "RssFile": 0}
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.01):
                now = _proc_kib(evaluator.pid)
                for key in peaks:
                    peaks[key] = max(peaks[key], now.get(key, 0))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        request = evaluator_pb2.EvaluateRequest(job_id="memory", original_model=model_digest, test=test_digest,
                                                dataset="imagenet-standin", properties=["accuracy"])
        with channel(address) as ch:
            results = [e.result for e in evaluator_pb2_grpc.EvaluatorStub(ch).Evaluate(request, timeout=3600)
                       if e.HasField("result")]
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
        after = _proc_kib(evaluator.pid)
        if not results or "acc_before" not in results[0].metrics:
            raise SystemExit(f"the evaluator did not score the split: {results}")
        return {"multiple": multiple, "samples": len(y) * multiple, "split_mb": split_mb,
                "start_mb": at_start["VmHWM"] / 1024, "peak_mb": after["VmHWM"] / 1024,
                "anon_mb": peaks["RssAnon"] / 1024, "file_mb": peaks["RssFile"] / 1024, "seconds": seconds}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def evaluator_memory(multiples: list[int], threads: int) -> list[dict]:
    """One row per multiple: the evaluator service's memory while it scores the split."""
    model, x, y = densenet_subject()
    return [_memory_row(model, x, y, m, threads) for m in multiples]


def print_memory(rows: list[dict], threads: int) -> None:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"evaluator memory: DenseNet-121-style (you2026 ImageNet subject), accuracy, {threads} thread(s), "
          f"load average {load}")
    print(f"{'split':>6}{'samples':>9}{'split MB':>10}{'peak RSS MB':>13}{'at start':>10}{'scoring':>9}"
          f"{'peak anon':>11}{'peak file':>11}{'seconds':>9}")
    for r in rows:
        print(f"{r['multiple']:>5}x{r['samples']:>9}{r['split_mb']:>10.1f}{r['peak_mb']:>13.1f}{r['start_mb']:>10.1f}"
              f"{r['peak_mb'] - r['start_mb']:>9.1f}{r['anon_mb']:>11.1f}{r['file_mb']:>11.1f}{r['seconds']:>9.1f}")
    first, last = rows[0], rows[-1]
    grew = (last["peak_mb"] - first["peak_mb"]) / max(last["split_mb"] - first["split_mb"], 1e-9)
    print(f"peak RSS grows {grew:.2f} MB per MB of split from {first['multiple']}x to {last['multiple']}x "
          f"({last['peak_mb'] / first['peak_mb']:.2f}x the peak for {last['split_mb'] / first['split_mb']:.0f}x "
          "the split); bounded by batching when about 0")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000, help="test inputs scored")
    parser.add_argument("--pgd-samples", type=int, default=128, help="inputs attacked")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime and torch threads, both sides")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-multiples", default="1,4,16",
                        help="sizes of the memory table, as multiples of the test split ('' to skip)")
    parser.add_argument("--memory-only", action="store_true", help="print only the memory table")
    args = parser.parse_args(argv)
    multiples = [int(m) for m in args.memory_multiples.split(",") if m.strip()]
    if args.memory_only:
        print_memory(evaluator_memory(multiples, args.threads), args.threads)
        return

    os.environ["FIXBENCH_THREADS"] = str(args.threads)
    os.environ["FIXBENCH_DEVICE"] = "cpu"
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    original, repaired = LeNetLike().eval(), LeNetLike().eval()
    example = torch.zeros(2, 1, 28, 28)
    original_bytes = torch_to_onnx_bytes(original, example)
    repaired_bytes = torch_to_onnx_bytes(repaired, example)
    x = rng.random((args.samples, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, args.samples)

    # Scoring: equal predictions first, so both sides provably do the same work.
    out = evaluate(original_bytes, repaired_bytes, x, y, properties=["accuracy"])
    raw = raw_scoring([original_bytes, repaired_bytes], x, args.threads)
    assert out.metrics["acc_after"] == (raw[1] == y).mean() * 100.0
    def cold_evaluate():
        # The evaluator keeps the original's scores per fault (every job of a fault shares
        # them); clear that so both sides score both models, like with like.
        _ORIGINALS.clear()
        return evaluate(original_bytes, repaired_bytes, x, y, properties=["accuracy"])

    t_eval, t_raw = best_of_interleaved(
        args.repeats, cold_evaluate, lambda: raw_scoring([original_bytes, repaired_bytes], x, args.threads))
    # What a study's second and later jobs of a fault pay: the repaired model only.
    t_warm, t_raw_one = best_of_interleaved(
        args.repeats,
        lambda: evaluate(original_bytes, repaired_bytes, x, y, properties=["accuracy"]),
        lambda: raw_scoring([repaired_bytes], x, args.threads),
    )

    # PGD: the evaluator attacks the onnx2torch re-import; the baseline the native module.
    module, reason = import_to_torch(load_model(original_bytes))
    if module is None:
        raise SystemExit(reason)
    for m in (module, original):
        for p in m.parameters():
            p.requires_grad_(False)
    n, eps = args.pgd_samples, 0.15
    xp, yp = x[:n], y[:n].astype(np.int64)
    step = FOOLBOX_REL_STEPSIZE * eps
    xt, yt = torch.from_numpy(xp), torch.from_numpy(yp)
    t_pgd, t_plain = best_of_interleaved(
        args.repeats,
        lambda: pgd_linf(module, xp, yp, eps, steps=args.steps, seed=args.seed, batch_size=256),
        lambda: plain_pgd(original, xt, yt, eps, args.steps, step, args.seed, 256),
    )

    rows = [
        ("scoring (samples/s)", args.samples / t_eval, args.samples / t_raw, t_raw / t_eval, "onnxruntime"),
        ("  per later job", args.samples / t_warm, args.samples / t_raw_one, t_raw_one / t_warm, "onnxruntime, 1 model"),
        ("PGD (ms/sample)", t_pgd / n * 1e3, t_plain / n * 1e3, t_plain / t_pgd, "plain torch loop"),
    ]
    print(f"evaluator benchmark: LeNet-like, {args.threads} thread(s), best of {args.repeats}")
    print(f"{'measure':<22}{'evaluator':>12}{'baseline':>12}{'ratio':>8}  {'baseline is':<22}target")
    for name, ours, base, ratio, what in rows:
        verdict = "ok" if ratio >= 0.9 else "BELOW 0.9x"
        print(f"{name:<22}{ours:>12.2f}{base:>12.2f}{ratio:>7.2f}x  {what:<22}≥ 0.9x {verdict}")
    if multiples:
        print_memory(evaluator_memory(multiples, args.threads), args.threads)


if __name__ == "__main__":
    main()
