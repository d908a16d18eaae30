"""Shared-token authentication: clients send `authorization: Bearer <token>`; servers compare
it in constant time and answer UNAUTHENTICATED otherwise. Health checks stay open so that
container probes and readiness waits work without the secret."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

AUTH_HEADER = "authorization"
# Only liveness is public: reflection would describe the services to an unauthenticated peer.
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


def bearer(token: str) -> str:
    return f"Bearer {token}"


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Rejects every call but health checks unless it carries the shared bearer token."""

    def __init__(self, token: str):
        self._expected = bearer(token).encode()

    def authorized(self, metadata: Any) -> bool:
        """True when `metadata` holds exactly one matching authorization header."""
        values = [v for k, v in (metadata or ()) if k.lower() == AUTH_HEADER]
        if len(values) != 1:
            return False
        value = values[0].encode() if isinstance(values[0], str) else bytes(values[0])
        # compare_digest's run time does not depend on where the first difference is.
        return hmac.compare_digest(value, self._expected)

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        method = handler_call_details.method
        if method.startswith(EXEMPT_PREFIXES) or self.authorized(handler_call_details.invocation_metadata):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:  # unknown method: let gRPC answer UNIMPLEMENTED as usual
            return None
        return _denying(handler, method)


def _denying(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape that aborts; requests stay undecoded, so an unauthenticated
    peer cannot make the server parse anything."""
    message = f"{method}: missing or wrong bearer token (set FIXBENCH_TOKEN on the client)"

    def deny(request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


def _with_token(metadata: Any, token: str) -> list[tuple[str, str]]:
    kept = [(k, v) for k, v in (metadata or ()) if k.lower() != AUTH_HEADER]
    return kept + [(AUTH_HEADER, bearer(token))]


class _SyncDetails(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, metadata: list[tuple[str, str]]):
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class TokenClientInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                             grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the bearer token to every call of a synchronous channel."""

    def __init__(self, token: str):
        self._token = token

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _SyncDetails(details, _with_token(details.metadata, self._token))

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


def _aio_details(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
    return grpc.aio.ClientCallDetails(method=details.method, timeout=details.timeout,
                                      metadata=grpc.aio.Metadata(*_with_token(details.metadata, token)),
                                      credentials=details.credentials, wait_for_ready=details.wait_for_ready)


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str):
        self._token = token

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(_aio_details(client_call_details, self._token), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str):
        self._token = token

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(_aio_details(client_call_details, self._token), request)


class _AioStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, token: str):
        self._token = token

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(_aio_details(client_call_details, self._token), request_iterator)


class _AioStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, token: str):
        self._token = token

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(_aio_details(client_call_details, self._token), request_iterator)


def aio_token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """One interceptor per call shape: grpc.aio dispatches on the interceptor's class."""
    return [_AioUnaryUnary(token), _AioUnaryStream(token), _AioStreamUnary(token), _AioStreamStream(token)]
