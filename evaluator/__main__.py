"""`python -m evaluator --store ADDR --port N`: runs the evaluator service."""

from __future__ import annotations

import argparse
import logging
import os

from evaluator.service import EvaluatorServicer
from fixbench.grpcutil import Server, die_with_parent
from fixbench.v1 import evaluator_pb2_grpc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fixbench-evaluator", description="fixbench evaluator service (gRPC)")
    parser.add_argument("--host", default=os.environ.get("FIXBENCH_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("FIXBENCH_PORT", "0")))
    parser.add_argument("--port-file", default=None)
    parser.add_argument("--store", default=os.environ.get("FIXBENCH_STORE", "127.0.0.1:50051"))
    parser.add_argument("--cache-dir", default=os.environ.get("FIXBENCH_CACHE", ".fixbench/cache/evaluator"))
    args = parser.parse_args(argv)
    die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s evaluator %(levelname)s %(message)s")
    servicer = EvaluatorServicer(args.store, args.cache_dir)
    server = Server([lambda s: evaluator_pb2_grpc.add_EvaluatorServicer_to_server(servicer, s)], ["Evaluator"],
                    port=args.port, host=args.host)
    server.write_port_file(args.port_file)
    from evaluator.properties import _device
    from fixbench.onnxio import execution_provider

    # Which device scoring (onnxruntime) and PGD (torch) run on: CUDA under the GPU override.
    logging.info("evaluator on %s (store %s): onnxruntime provider %s, attacks on %s", server.address, args.store,
                 execution_provider(), _device())
    server.wait()


if __name__ == "__main__":
    main()
