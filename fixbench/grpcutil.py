"""Server and channel scaffolding shared by every fixbench service: health, reflection,
message limits, port files and readiness waits. TLS and the shared token come from the
environment (see fixbench.security.config), so every server and client gets them here."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from pathlib import Path

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fixbench.security import (
    SecurityConfig,
    TokenAuthInterceptor,
    TokenClientInterceptor,
    aio_token_interceptors,
    channel_credentials,
    server_credentials,
    target_name_options,
)
from fixbench.v1 import artifacts_pb2, evaluator_pb2, repair_pb2

# Chunks are ~1 MiB; 8 MiB leaves headroom for a chunk plus metadata.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
]
# Servers accept the clients' keepalive pings (every 30 s, also between calls, e.g. during a
# long silent Fix stream): by default gRPC allows one ping without data per 5 minutes and
# answers more with GOAWAY "too_many_pings", which dropped connections mid-study.
SERVER_OPTIONS = CHANNEL_OPTIONS + [
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
]
_SERVICE_NAMES = {
    "Artifacts": artifacts_pb2.DESCRIPTOR.services_by_name["Artifacts"].full_name,
    "Repair": repair_pb2.DESCRIPTOR.services_by_name["Repair"].full_name,
    "Evaluator": evaluator_pb2.DESCRIPTOR.services_by_name["Evaluator"].full_name,
}


def service_name(short: str) -> str:
    """Fully qualified gRPC service name, e.g. 'fixbench.v1.Repair'."""
    return _SERVICE_NAMES[short]


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """When started by the local runtime (FIXBENCH_PARENT_PID set), ask the kernel for SIGKILL
    the moment that parent dies, even by kill -9, so no orphan outlives a study."""
    parent = os.environ.get("FIXBENCH_PARENT_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the parent died before we asked
        os._exit(1)


class Server:
    """A started gRPC server with health and reflection; `port` is the bound port.

    `security` defaults to the environment's settings (FIXBENCH_TOKEN, FIXBENCH_TLS_*).
    """

    def __init__(self, register: Iterable[Callable[[grpc.Server], None]], services: list[str],
                 port: int = 0, host: str = "127.0.0.1", max_workers: int = 16,
                 security: SecurityConfig | None = None):
        security = SecurityConfig.from_env() if security is None else security
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
            options=SERVER_OPTIONS,
            interceptors=[TokenAuthInterceptor(security.token)] if security.token else None,
        )
        for add in register:
            add(self._server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        full_names = [service_name(s) for s in services]
        reflection.enable_server_reflection(
            full_names + [health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
        )
        credentials = server_credentials(security)
        if credentials is None:
            self.port = self._server.add_insecure_port(f"{host}:{port}")
        else:
            self.port = self._server.add_secure_port(f"{host}:{port}", credentials)
        if self.port == 0:
            raise OSError(f"cannot bind {host}:{port}")
        self.address = f"{host}:{self.port}"
        self._server.start()
        for name in full_names + [""]:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def write_port_file(self, path: str | os.PathLike | None) -> None:
        """Publishes the bound port atomically so a parent process can find it."""
        if not path:
            return
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(str(self.port))
        tmp.replace(path)

    def wait(self) -> None:
        self._server.wait_for_termination()

    def stop(self, grace: float = 1.0) -> None:
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait()


def channel(address: str, security: SecurityConfig | None = None) -> grpc.Channel:
    """A channel with fixbench's message limits, and TLS and the token when configured
    (`security` defaults to the environment's settings)."""
    security = SecurityConfig.from_env() if security is None else security
    credentials = channel_credentials(security)
    options = CHANNEL_OPTIONS + target_name_options(security)
    if credentials is None:
        ch = grpc.insecure_channel(address, options=options)
    else:
        ch = grpc.secure_channel(address, credentials, options=options)
    return grpc.intercept_channel(ch, TokenClientInterceptor(security.token)) if security.token else ch


def aio_channel(address: str, extra_options: Sequence[tuple[str, object]] = (),
                security: SecurityConfig | None = None) -> grpc.aio.Channel:
    """The asyncio counterpart of `channel` (used by the orchestrator's scheduler)."""
    security = SecurityConfig.from_env() if security is None else security
    credentials = channel_credentials(security)
    options = CHANNEL_OPTIONS + target_name_options(security) + list(extra_options)
    interceptors = aio_token_interceptors(security.token) if security.token else None
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)


def wait_healthy(address: str, timeout: float = 60.0, service: str = "") -> None:
    """Blocks until the server at `address` reports SERVING; raises TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    with channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                last = exc.code().name
            time.sleep(0.1)
    raise TimeoutError(f"{address} did not become healthy within {timeout:.0f} s (last: {last})")
