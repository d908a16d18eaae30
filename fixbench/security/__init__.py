"""Security of the platform's transport and processes: optional TLS (server and mutual) and a
shared bearer token for every gRPC server and client (wired through fixbench.grpcutil), and
resource limits for locally started service processes."""

from fixbench.security.auth import TokenAuthInterceptor, TokenClientInterceptor, aio_token_interceptors
from fixbench.security.config import SecurityConfig, SecurityConfigError
from fixbench.security.limits import ResourceLimits, describe_exit
from fixbench.security.tls import channel_credentials, server_credentials, target_name_options

__all__ = [
    "SecurityConfig", "SecurityConfigError", "TokenAuthInterceptor", "TokenClientInterceptor",
    "aio_token_interceptors", "channel_credentials", "server_credentials", "target_name_options",
    "ResourceLimits", "describe_exit",
]
