"""Container health check: asks this container's gRPC server for grpc.health.v1 status.

Exit 0 when the server reports SERVING, 1 otherwise (Docker's HEALTHCHECK contract). The
port comes from FIXBENCH_PORT, the same variable the server binds to. The channel comes from
fixbench.grpcutil, so it speaks TLS (and mutual TLS) whenever the server does: the same
FIXBENCH_TLS_* variables configure both. Health needs no token. With TLS on, the server's
certificate must name 127.0.0.1 (an IP SAN) or FIXBENCH_TLS_SERVER_NAME must name one of
its SANs.
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fixbench.grpcutil import channel
from fixbench.security import SecurityConfigError

address = f"127.0.0.1:{os.environ.get('FIXBENCH_PORT', '50051')}"
try:
    with channel(address) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
except SecurityConfigError as exc:
    print(f"{address}: {exc}", file=sys.stderr)
    sys.exit(1)
except grpc.RpcError as exc:
    print(f"{address}: {exc.code().name} {exc.details() or ''}".rstrip(), file=sys.stderr)
    sys.exit(1)
status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
print(f"{address}: {status}")
sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
