"""The store's verification, carried by the blob file itself, so that a process sharing the
store's filesystem need not hash the blob again (issue 23: a hard-linked fetch of a 200 MB
split was bounded by sha256 at ~1.4 GB/s, below the raw socket it is measured against).

A durable DiskStore hashes every blob before it is placed (stream, copy or Adopt), and then
*seals* it: it sets the file's modification time to SEALED_MTIME_NS, an instant long past.
The kernel stamps every later write or truncate of the inode with the current time, so a
blob whose mtime is still the seal has not been written since its bytes were hashed, through
any of its links. A reader holding the very inode (a hard link, an open file) takes the seal
as the store's verified digest, as git's index takes a file's unchanged stat data instead of
hashing it again.

What a seal does not catch: a process that resets the mtime on purpose (it could as well
forge a checksum file), and bit rot under an unchanged inode. FIXBENCH_VERIFY_BLOBS=always
turns seals off for readers: every blob is hashed when a process first trusts it, as before
seals existed. A copy made with the mtime preserved (cp -a, rsync -t, tar) keeps the seal:
verify such a restored store with FIXBENCH_VERIFY_BLOBS=always."""

from __future__ import annotations

import os

from fixbench.v1.common_pb2 import Digest

# 1970-01-01T00:00:01Z, to the nanosecond: no write on a machine with a working clock stamps it.
SEALED_MTIME_NS = 1_000_000_000


def seals_trusted() -> bool:
    """Whether readers take a seal instead of hashing (FIXBENCH_VERIFY_BLOBS=always: never)."""
    return os.environ.get("FIXBENCH_VERIFY_BLOBS", "").strip().lower() != "always"


def seal(fd: int) -> None:
    """Seals the open file `fd`, whose bytes the caller has just verified. Needs the file's
    owner (or root), as the store's fchmod to read-only does."""
    os.utime(fd, ns=(os.fstat(fd).st_atime_ns, SEALED_MTIME_NS))


def is_sealed(st: os.stat_result, digest: Digest) -> bool:
    """Whether the file of stat `st` carries an unbroken seal for `digest`'s size, and
    readers may take it as verified."""
    return st.st_mtime_ns == SEALED_MTIME_NS and st.st_size == digest.size_bytes and seals_trusted()
