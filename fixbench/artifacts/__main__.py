"""`python -m fixbench.artifacts --root DIR --port N`: runs the artifact store server."""

from __future__ import annotations

import argparse
import logging
import os

from fixbench.artifacts.disk import DiskStore
from fixbench.artifacts.server import ArtifactsServicer
from fixbench.grpcutil import Server, die_with_parent
from fixbench.security.scope import KEY_CREATE_ENV, KEY_FILE_ENV, load_key, new_key_file
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
    if os.environ.get(KEY_CREATE_ENV) == "1" and os.environ.get(KEY_FILE_ENV):
        # Readable by the other users of the key's volume (the orchestrator runs as the host
        # user): only the store, the orchestrator and the evaluator mount it.
        new_key_file(os.environ[KEY_FILE_ENV], mode=0o644)
    # With a shared key (FIXBENCH_STORE_KEY_FILE) every call needs a signed credential.
    key = load_key()
    server = Server(
        [lambda s: artifacts_pb2_grpc.add_ArtifactsServicer_to_server(ArtifactsServicer(store, scope_key=key), s)],
        ["Artifacts"], port=args.port, host=args.host, max_workers=ArtifactsServicer.server_workers(),
    )
    server.write_port_file(args.port_file)
    logging.info("artifact store at %s, root %s, max blob %d bytes, %s", server.address, args.root, args.max_blob_bytes,
                 "scoped credentials required" if key else "no store key: every token holder may read every blob")
    server.wait()


if __name__ == "__main__":
    main()
