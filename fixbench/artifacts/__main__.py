"""`python -m fixbench.artifacts --root DIR --port N`: runs the artifact store server."""

from __future__ import annotations

import argparse
import logging
import os

from fixbench.artifacts.disk import DiskStore
from fixbench.artifacts.server import ArtifactsServicer
from fixbench.grpcutil import Server, die_with_parent
from fixbench.security.scope import load_key
from fixbench.v1 import artifacts_pb2_grpc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fixbench-store", description="fixbench artifact store (gRPC)")
    parser.add_argument("--root", default=os.environ.get("FIXBENCH_STORE_ROOT", ".fixbench/store"))
    parser.add_argument("--host", default=os.environ.get("FIXBENCH_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("FIXBENCH_PORT", "0")))
    parser.add_argument("--port-file", default=None, help="write the bound port here once serving")
    parser.add_argument("--max-blob-bytes", type=int, default=int(os.environ.get("FIXBENCH_MAX_BLOB_BYTES", str(2 * 1024**3))))
    parser.add_argument("--max-store-bytes", type=int, default=int(os.environ.get("FIXBENCH_MAX_STORE_BYTES", "0")) or None,
                        help="quota for all blobs together; uploads beyond it get RESOURCE_EXHAUSTED")
    args = parser.parse_args(argv)
    die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s store %(levelname)s %(message)s")
    store = DiskStore(args.root, max_blob_bytes=args.max_blob_bytes, max_total_bytes=args.max_store_bytes)
    server = Server(
        # With a shared key (FIXBENCH_STORE_KEY_FILE) every call needs a signed credential.
        [lambda s: artifacts_pb2_grpc.add_ArtifactsServicer_to_server(ArtifactsServicer(store, scope_key=load_key()), s)],
        ["Artifacts"], port=args.port, host=args.host, max_workers=ArtifactsServicer.server_workers(),
    )
    server.write_port_file(args.port_file)
    logging.info("artifact store at %s, root %s, max blob %d bytes", server.address, args.root, args.max_blob_bytes)
    server.wait()


if __name__ == "__main__":
    main()
