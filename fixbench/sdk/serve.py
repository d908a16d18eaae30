"""`serve(MyApproach)`: the command line every approach service shares."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from fixbench.grpcutil import Server, die_with_parent
from fixbench.sdk.approach import Approach
from fixbench.sdk.server import RepairServicer
from fixbench.v1 import repair_pb2_grpc


def stack_versions() -> str:
    """The interpreter's environment and the versions of the packages whose clashes the
    per-service environments and images keep apart (read from metadata: nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("numpy", "onnxruntime", "onnx", "torch"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} absent")
    return f"python {sys.version.split()[0]} at {sys.prefix}; " + ", ".join(found)


def serve(approach_cls: type[Approach], argv: list[str] | None = None) -> None:
    params = "\n".join(f"  {p.name} ({p.type.__name__}, default {p.default!r}): {p.help}" for p in approach_cls.params)
    parser = argparse.ArgumentParser(
        prog=approach_cls.name,
        description=f"{approach_cls.name} {approach_cls.version}: {approach_cls.summary}",
        epilog=f"job parameters:\n{params or '  none'}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=os.environ.get("FIXBENCH_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("FIXBENCH_PORT", "0")))
    parser.add_argument("--port-file", default=None, help="write the bound port here once serving")
    parser.add_argument("--store", default=os.environ.get("FIXBENCH_STORE", "127.0.0.1:50051"), help="artifact store address")
    parser.add_argument("--cache-dir", default=os.environ.get("FIXBENCH_CACHE", f".fixbench/cache/{approach_cls.name}"))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("FIXBENCH_WORKERS", "8")))
    args = parser.parse_args(argv)
    die_with_parent()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {approach_cls.name} %(levelname)s %(message)s")
    memory_mb = os.environ.get("FIXBENCH_MEMORY_MB")
    if memory_mb:
        # In a container the engine's OOM killer gives no status; our own limit turns an
        # allocation past it into MemoryError, which the SDK reports as OOM.
        from fixbench.security.limits import ResourceLimits

        ResourceLimits(memory_mb=int(memory_mb)).apply()
    threads = os.environ.get("FIXBENCH_THREADS")
    if threads and approach_cls.uses_torch:
        import torch

        torch.set_num_threads(int(threads))
    servicer = RepairServicer(approach_cls, args.store, args.cache_dir, exit_on_abandon=True)
    server = Server([lambda s: repair_pb2_grpc.add_RepairServicer_to_server(servicer, s)], ["Repair"],
                    port=args.port, host=args.host, max_workers=args.workers)
    server.write_port_file(args.port_file)
    logging.info("serving %s on %s (store %s)", approach_cls.name, server.address, args.store)
    logging.info("stack: %s", stack_versions())
    server.wait()
