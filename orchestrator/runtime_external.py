"""The `external` runtime: services already running elsewhere (docker compose, Swarm,
Kubernetes), named by environment variables. The orchestrator only needs addresses.

    FIXBENCH_STORE=store:50051
    FIXBENCH_EVALUATOR=evaluator:50051
    FIXBENCH_APPROACHES="noop=noop:50051;finetune=finetune:50051,finetune-2:50051"

An address may be a DNS name that resolves to several replicas: gRPC then balances
calls round-robin across them (`dns:///` target with the round_robin policy).
"""

from __future__ import annotations

import os

from fixbench.grpcutil import wait_healthy
from orchestrator.runtime_local import Addresses


class ExternalRuntimeError(ValueError):
    """Missing or malformed service addresses."""


def parse_approaches(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, addrs = part.partition("=")
        if not sep or not name.strip() or not addrs.strip():
            raise ExternalRuntimeError(f"FIXBENCH_APPROACHES entry {part!r} is not name=host:port[,host:port]")
        out[name.strip()] = [a.strip() for a in addrs.split(",") if a.strip()]
    return out


class ExternalRuntime:
    def __init__(self, env: dict[str, str] | None = None, health_timeout: float = 300.0):
        self.env = dict(os.environ if env is None else env)
        self.health_timeout = health_timeout

    def start(self, approaches: dict[str, int]) -> Addresses:
        missing = [k for k in ("FIXBENCH_STORE", "FIXBENCH_EVALUATOR", "FIXBENCH_APPROACHES") if not self.env.get(k)]
        if missing:
            raise ExternalRuntimeError(f"the external runtime needs {', '.join(missing)} in the environment")
        known = parse_approaches(self.env["FIXBENCH_APPROACHES"])
        absent = sorted(set(approaches) - set(known))
        if absent:
            raise ExternalRuntimeError(f"no address for approach(es) {absent} in FIXBENCH_APPROACHES (has {sorted(known)})")
        addresses = Addresses(store=self.env["FIXBENCH_STORE"], evaluator=self.env["FIXBENCH_EVALUATOR"],
                              approaches={name: known[name] for name in approaches})
        for address in [addresses.store, addresses.evaluator, *sum(addresses.approaches.values(), [])]:
            wait_healthy(address, timeout=self.health_timeout)
        return addresses

    def log_tail(self, address: str, lines: int = 15) -> str:
        return ""

    def stop(self) -> None:
        """Nothing to stop: the services belong to their engine."""

    def __enter__(self) -> "ExternalRuntime":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
