"""Content-addressed artifact store: sha256 digests, ~1 MiB chunked streams."""

from fixbench.artifacts.digest import CHUNK_BYTES, DigestError, digest_of_bytes, digest_of_file, make_digest
from fixbench.artifacts.disk import BlobTooLarge, DiskStore, StoreFull

__all__ = [
    "CHUNK_BYTES", "DigestError", "digest_of_bytes", "digest_of_file", "make_digest", "BlobTooLarge", "DiskStore", "StoreFull",
]
