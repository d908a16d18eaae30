"""TLS credentials from a SecurityConfig: server-side TLS, optionally demanding client
certificates (mutual TLS), and the matching channel credentials."""

from __future__ import annotations

import grpc

from fixbench.security.config import SecurityConfig


def server_credentials(config: SecurityConfig) -> grpc.ServerCredentials | None:
    """Credentials for add_secure_port, or None when the server has no certificate."""
    if not config.server_tls:
        return None
    return grpc.ssl_server_credentials(
        [(config.private_key, config.cert_chain)],
        root_certificates=config.ca if config.client_auth else None,
        require_client_auth=config.client_auth,
    )


def channel_credentials(config: SecurityConfig) -> grpc.ChannelCredentials | None:
    """Credentials for a secure channel (None: plaintext). The client presents its own
    certificate whenever it has one, so the same settings serve mutual TLS."""
    if not config.client_tls:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=config.ca, private_key=config.private_key, certificate_chain=config.cert_chain,
    )


def target_name_options(config: SecurityConfig) -> list[tuple[str, str]]:
    """Channel options that make clients expect `server_name` in the server's certificate."""
    if config.client_tls and config.server_name:
        return [("grpc.ssl_target_name_override", config.server_name)]
    return []
