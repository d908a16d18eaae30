"""Transport and authentication settings, read from the environment so that every server
and client picks them up without code changes:

    FIXBENCH_TOKEN            shared bearer token (or FIXBENCH_TOKEN_FILE: a file holding it,
                              e.g. a Docker / Kubernetes secret)
    FIXBENCH_TLS_CERT / _KEY  this process's PEM certificate chain and private key: a server
                              serves TLS with them; a client presents them for mutual TLS
    FIXBENCH_TLS_CA           PEM bundle of the CA(s) to trust: clients verify servers with it,
                              servers verify client certificates with it
    FIXBENCH_TLS_CLIENT_AUTH  1/true: servers demand a client certificate (mutual TLS)
    FIXBENCH_TLS_SERVER_NAME  the name clients expect in server certificates, when one
                              certificate is shared by services reached under other names

Nothing set means plaintext without a token, as before.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_TRUE = {"1", "true", "yes", "on", "require"}
_FALSE = {"", "0", "false", "no", "off"}


class SecurityConfigError(ValueError):
    """Inconsistent or unreadable security settings; the message names the variable."""


@dataclass(frozen=True)
class SecurityConfig:
    """Resolved settings: file contents, not paths, so a config cannot change under a server."""

    token: str | None = None
    cert_chain: bytes | None = None
    private_key: bytes | None = None
    ca: bytes | None = None
    client_auth: bool = False
    server_name: str | None = None

    @property
    def server_tls(self) -> bool:
        """True when servers serve TLS (they have a certificate and its key)."""
        return self.cert_chain is not None and self.private_key is not None

    @property
    def client_tls(self) -> bool:
        """True when clients connect with TLS (they trust a CA or hold a certificate)."""
        return self.ca is not None or self.server_tls

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SecurityConfig:
        """Reads FIXBENCH_TOKEN[_FILE] and FIXBENCH_TLS_*; raises SecurityConfigError naming
        the variable that is wrong."""
        env = os.environ if environ is None else environ
        token = env.get("FIXBENCH_TOKEN") or None
        token_file = env.get("FIXBENCH_TOKEN_FILE") or None
        if token and token_file:
            raise SecurityConfigError("set only one of FIXBENCH_TOKEN and FIXBENCH_TOKEN_FILE")
        if token_file:
            token = _read("FIXBENCH_TOKEN_FILE", token_file).decode().strip()
            if not token:
                raise SecurityConfigError(f"FIXBENCH_TOKEN_FILE {token_file} is empty")
        if token is not None:
            _check_token(token)
        cert_path, key_path = env.get("FIXBENCH_TLS_CERT") or None, env.get("FIXBENCH_TLS_KEY") or None
        if (cert_path is None) != (key_path is None):
            missing = "FIXBENCH_TLS_KEY" if key_path is None else "FIXBENCH_TLS_CERT"
            raise SecurityConfigError(f"{missing} is not set: a TLS certificate needs both FIXBENCH_TLS_CERT and FIXBENCH_TLS_KEY")
        ca_path = env.get("FIXBENCH_TLS_CA") or None
        flag = env.get("FIXBENCH_TLS_CLIENT_AUTH", "").strip().lower()
        if flag not in _TRUE | _FALSE:
            raise SecurityConfigError(f"FIXBENCH_TLS_CLIENT_AUTH={flag!r}: use 1 or 0")
        client_auth = flag in _TRUE
        if client_auth and (ca_path is None or cert_path is None):
            raise SecurityConfigError("FIXBENCH_TLS_CLIENT_AUTH needs FIXBENCH_TLS_CA (to verify clients) "
                                      "and FIXBENCH_TLS_CERT/KEY (the server's own certificate)")
        return cls(
            token=token,
            cert_chain=_read("FIXBENCH_TLS_CERT", cert_path) if cert_path else None,
            private_key=_read("FIXBENCH_TLS_KEY", key_path) if key_path else None,
            ca=_read("FIXBENCH_TLS_CA", ca_path) if ca_path else None,
            client_auth=client_auth,
            server_name=env.get("FIXBENCH_TLS_SERVER_NAME") or None,
        )


def _read(variable: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"{variable}={path}: cannot read it ({exc.strerror})") from exc


def _check_token(token: str) -> None:
    # A header value must be printable ASCII; a short token is guessable.
    if not token.isascii() or not token.isprintable() or " " in token:
        raise SecurityConfigError("FIXBENCH_TOKEN must be printable ASCII without spaces")
    if len(token) < 16:
        raise SecurityConfigError(f"FIXBENCH_TOKEN is {len(token)} characters; use at least 16 (e.g. `openssl rand -hex 32`)")
