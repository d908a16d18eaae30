"""Scoped store credentials: what one repair job may read from and write to the artifact store.

The orchestrator mints, per job, a credential signed with a key it shares with the store
(HMAC-SHA256): the job id, the digests the job may download (the faulty model and the train,
valid and repair splits: never the test split), a write quota in bytes, and an expiry. The
approach service presents it (gRPC metadata `x-fixbench-scope`) on every store call; the store
verifies it and refuses anything outside it with PERMISSION_DENIED, recording the attempt. The
orchestrator and the evaluator hold the key itself and mint full-access credentials for their
own calls. Without a key configured (FIXBENCH_STORE_KEY_FILE / FIXBENCH_STORE_KEY) the store
is open to every token holder, as before.

Token: base64url(JSON payload) "." hex(HMAC-SHA256(key, base64url part)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

HEADER = "x-fixbench-scope"
KEY_FILE_ENV = "FIXBENCH_STORE_KEY_FILE"
KEY_ENV = "FIXBENCH_STORE_KEY"
# A job credential's lifetime: jobs may queue for long in a big study, and a credential is
# minted when the job is made.
DEFAULT_TTL_SECONDS = float(os.environ.get("FIXBENCH_SCOPE_TTL", str(7 * 24 * 3600)))


class ScopeError(PermissionError):
    """A credential that is missing, malformed, forged, expired or does not cover the call."""


@dataclass(frozen=True)
class Scope:
    """`read`: the sha256 digests the holder may download, or None for all (orchestrator,
    evaluator); `write_bytes`: bytes it may upload in all, or None for no limit."""

    job: str
    read: frozenset[str] | None
    write_bytes: int | None
    expires: float

    def may_read(self, sha256: str) -> bool:
        return self.read is None or sha256 in self.read


# Seconds to wait for FIXBENCH_STORE_KEY_FILE to appear (0: it must exist). Under compose the
# store writes the key into a volume at its start, and the orchestrator and the evaluator,
# which start beside it, wait for it.
KEY_WAIT_ENV = "FIXBENCH_STORE_KEY_WAIT"
# "1": the store makes the key file when it is missing (compose: a volume only the store,
# the orchestrator and the evaluator mount).
KEY_CREATE_ENV = "FIXBENCH_STORE_KEY_CREATE"


class KeyFileMissing(FileNotFoundError):
    """FIXBENCH_STORE_KEY_FILE names a file that is not there (in time)."""


def load_key(environ: dict | None = None) -> bytes | None:
    """The shared key from FIXBENCH_STORE_KEY_FILE (a file holding it) or FIXBENCH_STORE_KEY."""
    env = os.environ if environ is None else environ
    path = env.get(KEY_FILE_ENV)
    if path:
        wait = float(env.get(KEY_WAIT_ENV) or 0)
        deadline = time.monotonic() + wait
        while True:
            try:
                key = Path(path).read_bytes().strip()
            except FileNotFoundError:
                key = b""
            if key:  # an empty file is one being written
                return key
            if time.monotonic() >= deadline:
                raise KeyFileMissing(
                    f"{KEY_FILE_ENV}={path}: no store key there" + (f" after {wait:.0f} s" if wait else "")
                    + " (the store writes it when started with FIXBENCH_STORE_KEY_CREATE=1; or unset the variable"
                    " to run the store without scoped credentials)")
            time.sleep(0.2)
    value = env.get(KEY_ENV)
    return value.encode() if value else None


def new_key_file(path: str | Path, mode: int = 0o600) -> Path:
    """Writes a fresh random key (kept if it exists already). `mode` 0o600: its owner alone
    reads it; a deployment whose readers run as other users puts it where only they can reach.
    Written to a temporary name and renamed, so a reader never sees half a key."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        os.chmod(tmp, mode)  # umask may have narrowed it
        try:
            os.link(tmp, path)  # fails if another process made it meanwhile: theirs is kept
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(key: bytes, job: str, read: Iterable[str] | None, write_bytes: int | None,
         ttl_seconds: float = DEFAULT_TTL_SECONDS, now: float | None = None) -> str:
    """A signed credential; `read=None` and `write_bytes=None` mean no limit."""
    payload = {"job": job, "read": None if read is None else sorted(set(read)), "write_bytes": write_bytes,
               "exp": (time.time() if now is None else now) + ttl_seconds}
    body = _b64(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())
    return f"{body}.{hmac.new(key, body.encode(), hashlib.sha256).hexdigest()}"


def verify(key: bytes, token: str | None, now: float | None = None) -> Scope:
    """The scope of a valid credential; ScopeError otherwise."""
    if not token:
        raise ScopeError(f"the store requires a scoped credential ({HEADER} metadata)")
    body, _, signature = token.partition(".")
    expected = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise ScopeError("the store credential is not signed by the orchestrator")
    try:
        data = json.loads(_unb64(body))
        scope = Scope(str(data["job"]), None if data["read"] is None else frozenset(data["read"]),
                      None if data["write_bytes"] is None else int(data["write_bytes"]), float(data["exp"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ScopeError(f"the store credential is malformed: {exc}") from None
    if (time.time() if now is None else now) > scope.expires:
        raise ScopeError(f"the store credential of job {scope.job[:12]} has expired")
    return scope


def claims_full_access(token: str | None) -> bool:
    """Whether a credential *claims* full access (read every digest, no write quota), read
    without the key and so without checking its signature: for a client's own restraint, not
    for enforcement. The artifact client takes the store's files from its directory (a path
    around every scope check) only for such a credential or none; the store still verifies
    every credential it is shown. No credential counts as full access (a store without a key
    is open to every caller); a malformed token claims nothing."""
    if not token:
        return True
    try:
        data = json.loads(_unb64(token.partition(".")[0]))
        return data["read"] is None and data["write_bytes"] is None
    except (ValueError, KeyError, TypeError):
        return False


def full_access(key: bytes, who: str, ttl_seconds: float = 24 * 3600) -> str:
    """A credential for the orchestrator's or the evaluator's own calls: every digest."""
    return mint(key, who, None, None, ttl_seconds)


__all__ = ["DEFAULT_TTL_SECONDS", "HEADER", "KEY_CREATE_ENV", "KEY_ENV", "KEY_FILE_ENV", "KEY_WAIT_ENV", "KeyFileMissing",
           "Scope", "ScopeError", "claims_full_access", "full_access", "load_key", "mint", "new_key_file", "verify"]
