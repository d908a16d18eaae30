"""Container health check: asks this container's gRPC server for grpc.health.v1 status.

Exit 0 when the server reports SERVING, 1 otherwise (Docker's HEALTHCHECK contract). The
port comes from FIXBENCH_PORT, the same variable the server binds to.
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

address = f"127.0.0.1:{os.environ.get('FIXBENCH_PORT', '50051')}"
try:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
except grpc.RpcError as exc:
    print(f"{address}: {exc.code().name}", file=sys.stderr)
    sys.exit(1)
status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
print(f"{address}: {status}")
sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
