"""Artifact streaming throughput vs a raw socket copy of the same bytes, side by side.

Both paths move the same blob over loopback from this process to a receiver process that
writes it to disk: the store via the gRPC Upload stream (with sha256 verification and an
atomic rename), the raw path via a plain TCP socket into a file. Prints MB/s and the ratio
(target: store ≥ 0.8× raw). Usage: python benchmarks/bench_artifacts.py [--mb 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fixbench.artifacts.client import ArtifactClient  # noqa: E402
from fixbench.grpcutil import wait_healthy  # noqa: E402

RAW_RECEIVER = textwrap.dedent("""
    import socket, sys, os
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
    print(srv.getsockname()[1], flush=True)
    while True:
        conn, _ = srv.accept()
        with open(sys.argv[1], "wb") as fh:
            while chunk := conn.recv(1 << 20):
                fh.write(chunk)
            fh.flush(); os.fsync(fh.fileno())
        conn.sendall(b"k"); conn.close()
""")


def raw_copy(port: int, data: bytes) -> float:
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        view = memoryview(data)
        for i in range(0, len(data), 1 << 20):
            s.sendall(view[i : i + (1 << 20)])
        s.shutdown(socket.SHUT_WR)
        s.recv(1)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fixbench-bench-"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    store = subprocess.Popen([sys.executable, "-m", "fixbench.artifacts", "--root", str(tmp / "store"), "--port", "0",
                              "--port-file", str(tmp / "port")], env=env, stderr=subprocess.DEVNULL)
    raw = subprocess.Popen([sys.executable, "-c", RAW_RECEIVER, str(tmp / "raw.bin")], stdout=subprocess.PIPE, text=True)
    try:
        raw_port = int(raw.stdout.readline())
        while not (tmp / "port").exists():
            time.sleep(0.05)
        address = f"127.0.0.1:{(tmp / 'port').read_text()}"
        wait_healthy(address)
        size = args.mb * 1024 * 1024
        store_up, store_down, raw_times = [], [], []
        for run in range(args.runs):
            data = os.urandom(size)  # fresh bytes per run: the store must not short-cut a known blob
            raw_times.append(raw_copy(raw_port, data))
            with ArtifactClient(address, tmp / f"cache-up-{run}") as up:
                t = time.perf_counter()
                digest = up.upload_bytes(data)
                store_up.append(time.perf_counter() - t)
            with ArtifactClient(address, tmp / f"cache-down-{run}") as down:
                t = time.perf_counter()
                down.fetch(digest)
                store_down.append(time.perf_counter() - t)
        mbps = lambda secs: args.mb / min(secs)  # noqa: E731 - best of N, the usual for throughput
        print(f"blob {args.mb} MB over loopback, best of {args.runs} runs")
        print(f"  raw socket copy      {mbps(raw_times):8.1f} MB/s")
        print(f"  store upload         {mbps(store_up):8.1f} MB/s   ratio {min(raw_times) / min(store_up):.2f}x (target >= 0.8x)")
        print(f"  store download       {mbps(store_down):8.1f} MB/s   ratio {min(raw_times) / min(store_down):.2f}x (target >= 0.8x)")
    finally:
        for proc in (store, raw):
            proc.kill()
            proc.wait()
        subprocess.run(["rm", "-rf", str(tmp)])


if __name__ == "__main__":
    main()
