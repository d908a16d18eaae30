"""Issue 23 item 4: the evaluator's memory is bounded by batching, not by the test split's
size. The split is memory-mapped from the verified cache file (fixbench.arrays.map_split),
and every pass over it (the scoring batches, the hash that keys the original's scores)
drops the pages it is done with (fixbench.arrays.release)."""

from __future__ import annotations

import io
import mmap
import threading
import zipfile

import numpy as np
import pytest

from fixbench.arrays import SplitFormatError, load_split, map_split, npz_bytes, release
from tests.conftest import dense_classifier

FEATURES = 3072  # a 3x32x32 image's worth of inputs per sample: the input dominates the memory


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def _mapped(arr: np.ndarray) -> bool:
    base = arr.base
    while isinstance(base, (np.ndarray, memoryview)):
        base = base.base if isinstance(base, np.ndarray) else base.obj
    return isinstance(base, mmap.mmap)


pytestmark = pytest.mark.skipif(not hasattr(mmap, "MADV_DONTNEED"), reason="needs madvise (Linux)")


def test_map_split_reads_what_load_split_reads(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x": rng.random((50, 3, 4, 4), dtype=np.float32), "y": rng.integers(0, 5, 50),
              "group": rng.integers(0, 2, 50)}
    path = tmp_path / "split.npz"
    path.write_bytes(npz_bytes(arrays))
    mapped, loaded = map_split(path), load_split(path)
    for a, b in zip(mapped, loaded, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert all(_mapped(a) and not a.flags.writeable for a in mapped)
    # np.savez: stored members (a Fortran-ordered one mapped too); savez_compressed: read, not mapped
    fortran = np.asfortranarray(arrays["x"])
    np.savez(tmp_path / "plain.npz", x=fortran, y=arrays["y"])
    x, y, group = map_split(tmp_path / "plain.npz")
    assert np.array_equal(x, fortran) and _mapped(x) and group is None
    np.savez_compressed(tmp_path / "packed.npz", x=arrays["x"], y=arrays["y"])
    x, _, _ = map_split(tmp_path / "packed.npz")
    assert np.array_equal(x, arrays["x"]) and not _mapped(x)


def test_map_split_refuses_what_load_split_refuses(tmp_path):
    good = npz_bytes({"x": np.zeros((4, 2), np.float32), "y": np.zeros(4, np.int64)})
    cases = {}
    # a member that declares more rows than it holds
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 4)})
        zf.writestr("x.npy", header.getvalue() + b"\0" * 64)
        zf.writestr("y.npy", npz_member(np.zeros(4, np.int64)))
    cases["overdeclared"] = buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", npz_member(np.zeros((4, 2), np.float32)))
        zf.writestr("evil.pkl", b"not an array")
    cases["not npy"] = buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", npz_member(np.zeros((4, 2), np.float32)))
        zf.writestr("y.npy", npz_member(np.zeros(3, np.int64)))
    cases["length mismatch"] = buf.getvalue()
    cases["truncated"] = good[: len(good) // 2]
    for name, data in cases.items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(data)
        with pytest.raises(SplitFormatError):
            map_split(path)
        with pytest.raises(SplitFormatError):
            load_split(path)


def npz_member(arr: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, arr, allow_pickle=False)
    return out.getvalue()


def test_release_keeps_one_batch_resident(tmp_path):
    path = tmp_path / "big.npz"
    rows = 6000
    path.write_bytes(npz_bytes({"x": np.ones((rows, FEATURES), np.float32), "y": np.zeros(rows, np.int64)}))
    x, _, _ = map_split(path)  # about 74 MB

    def pass_over(drop: bool) -> float:
        before = _status_mb("RssFile")
        for i in range(0, rows, 64):
            batch = x[i : i + 64]
            assert float(batch[-1, -1]) == 1.0  # touches the batch's pages
            if drop:
                release(batch)
        return _status_mb("RssFile") - before

    assert pass_over(drop=True) < 12
    assert pass_over(drop=False) > 50  # without release every page read stays mapped
    release(x)
    assert np.array_equal(x[:3], np.ones((3, FEATURES), np.float32))  # dropped pages read in again
    release(np.ones(10))  # an array on the heap: nothing to do


def test_the_evaluator_scores_a_large_split_in_bounded_memory(tmp_path, monkeypatch):
    """The service's path end to end: a ~74 MB split raises the evaluator's resident memory
    by far less than its size (it used to hold the split's bytes and the parsed arrays: 2x)."""
    from evaluator.service import EvaluatorServicer, evaluate_models
    from fixbench.artifacts.disk import DiskStore
    from fixbench.artifacts.server import ArtifactsServicer
    from fixbench.grpcutil import Server
    from fixbench.v1 import artifacts_pb2_grpc

    rng = np.random.default_rng(1)
    weights = rng.normal(0, 0.01, (FEATURES, 3)).astype(np.float32)
    model = dense_classifier(weights, np.zeros(3, np.float32)).SerializeToString()
    rows = 6000
    x = rng.random((rows, FEATURES), dtype=np.float32)
    y = rng.integers(0, 3, rows)
    big = DiskStore(tmp_path / "store")
    big_server = Server([lambda s: artifacts_pb2_grpc.add_ArtifactsServicer_to_server(ArtifactsServicer(big), s)],
                        ["Artifacts"])
    try:
        split = npz_bytes({"x": x, "y": y})
        test_digest, model_digest = big.put_bytes(split), big.put_bytes(model)
        expected = float((np.argmax(x @ weights, axis=1) == y).mean() * 100)
        del split, x
        monkeypatch.setenv("FIXBENCH_STORE_DIR", str(big.root))
        servicer = EvaluatorServicer(big_server.address, str(tmp_path / "eval-cache"))
        model_bytes = servicer.store.fetch_bytes(model_digest)
        peak, done = [0.0], threading.Event()

        def sample():
            while not done.wait(0.005):
                peak[0] = max(peak[0], _status_mb("VmRSS"))

        before = _status_mb("VmRSS")
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            xs, ys, _ = servicer._split(test_digest)
            result = evaluate_models(model_bytes, model_bytes, xs, ys, {}, properties=["accuracy"])
        finally:
            done.set()
            sampler.join()
        assert _mapped(xs) and servicer.store.transfers == {"shared fetch": 2}
        assert result.metrics["acc_before"] == pytest.approx(expected, abs=0.1)
        assert max(peak[0], _status_mb("VmRSS")) - before < 30, (before, peak[0])
    finally:
        big_server.stop(0)
