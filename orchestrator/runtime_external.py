"""The `external` runtime: services already running elsewhere (docker compose, Swarm,
Kubernetes), named by environment variables. The orchestrator only needs addresses.

    FIXBENCH_STORE=store:50051
    FIXBENCH_EVALUATOR=evaluator:50051
    FIXBENCH_APPROACHES="finetune=finetune:50051,finetune-2:50051"   # optional

An approach the study names and FIXBENCH_APPROACHES does not is found by convention at
`<name>:50051` (its service name in compose, Swarm and Kubernetes; FIXBENCH_APPROACH_PORT
changes the port), so adding an approach needs no address list anywhere.

A DNS name that resolves to several replicas (`docker compose up --scale finetune=3`) is
expanded to one address per replica, so the orchestrator keeps `concurrency` slots on each
and every job stays on the replica it started on (given the name alone, gRPC would balance
Check and Fix of one job across different replicas and the Fix calls would bunch up).
FIXBENCH_EXPAND_REPLICAS=0 keeps the names as given.

Swarm (dnsrr) and Kubernetes (headless Services) list a replica in DNS only once it is
healthy, while the orchestrator starts at the same moment: expanded too early, a name would
yield one replica. FIXBENCH_EXPECT_REPLICAS="noop=1;finetune=2" (host=count, the deployment's
replicas) makes the runtime wait until DNS lists them, at most FIXBENCH_EXPECT_TIMEOUT seconds
(default 300), then start with the replicas that are there. Only the study's approaches are
waited for: the deployment may run many more.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from fixbench.grpcutil import wait_healthy
from orchestrator.runtime_api import Addresses


class ExternalRuntimeError(ValueError):
    """Missing or malformed service addresses."""


log = logging.getLogger("fixbench.runtime")
Resolver = Callable[[str, int], list[str]]


def resolve_ipv4(host: str, port: int) -> list[str]:
    """Every IPv4 address `host` resolves to, sorted so the order is the same on every run."""
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sorted({info[4][0] for info in infos}, key=ipaddress.IPv4Address)


def expand_address(address: str, resolve: Resolver = resolve_ipv4) -> list[str]:
    """`host:port` -> one `ip:port` per address the host resolves to (itself if none, so an
    unresolvable name is waited for and reported by name). Literal IPs pass unchanged."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ExternalRuntimeError(f"approach address {address!r} is not host:port")
    try:
        ipaddress.ip_address(host.strip("[]"))
        return [address]
    except ValueError:
        pass
    return [f"{ip}:{port}" for ip in resolve(host, int(port))] or [address]


def expand_replicas(approaches: dict[str, list[str]], resolve: Resolver = resolve_ipv4) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, addresses in approaches.items():
        expanded: list[str] = []
        for address in addresses:
            expanded += [a for a in expand_address(address, resolve) if a not in expanded]
        out[name] = expanded
    return out


def parse_expected(text: str) -> dict[str, int]:
    """FIXBENCH_EXPECT_REPLICAS `host=count;…` -> {host: count}."""
    expected: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        host, sep, count = part.partition("=")
        host, count = host.strip(), count.strip()
        if not sep or not host or not count.isdigit() or int(count) < 1:
            raise ExternalRuntimeError(f"FIXBENCH_EXPECT_REPLICAS entry {part!r} is not host=count (count >= 1)")
        expected[host] = int(count)
    return expected


def wait_for_replicas(expected: Mapping[str, int], timeout: float, resolve: Resolver = resolve_ipv4,
                      sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> dict[str, tuple[int, int]]:
    """Polls DNS until every host lists its expected replicas or `timeout` passed; returns
    {host: (found, expected)} for those still short."""
    deadline = clock() + timeout
    while True:
        short = {h: (len(resolve(h, 0)), n) for h, n in expected.items() if len(resolve(h, 0)) < n}
        if not short or clock() >= deadline:
            return short
        sleep(1.0)


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
        self.unavailable: dict[str, str] = {}  # the deployment owns its services: none here

    def start(self, approaches: dict[str, int]) -> Addresses:
        missing = [k for k in ("FIXBENCH_STORE", "FIXBENCH_EVALUATOR") if not self.env.get(k)]
        if missing:
            raise ExternalRuntimeError(f"the external runtime needs {', '.join(missing)} in the environment")
        known = parse_approaches(self.env.get("FIXBENCH_APPROACHES", ""))
        port = self.env.get("FIXBENCH_APPROACH_PORT", "50051").strip()
        if not port.isdigit():
            raise ExternalRuntimeError(f"FIXBENCH_APPROACH_PORT={port!r} is not a port number")
        known = {name: known.get(name) or [f"{name}:{port}"] for name in approaches}
        self._wait_for_expected_replicas({address.rsplit(":", 1)[0] for addrs in known.values() for address in addrs})
        if self.env.get("FIXBENCH_EXPAND_REPLICAS", "1") != "0":
            known = expand_replicas(known)
        addresses = Addresses(store=self.env["FIXBENCH_STORE"], evaluator=self.env["FIXBENCH_EVALUATOR"],
                              approaches={name: known[name] for name in approaches})
        waits = [("the store", addresses.store), ("the evaluator", addresses.evaluator),
                 *((f"approach {name!r}", a) for name, addrs in addresses.approaches.items() for a in addrs)]
        for what, address in waits:
            try:
                wait_healthy(address, timeout=self.health_timeout)
            except TimeoutError as exc:
                # Under compose an approach starts only when named (`up` with no names starts all):
                # the usual cause is a study that names one the deployment did not start.
                raise ExternalRuntimeError(
                    f"{what} at {address} did not answer gRPC health within {self.health_timeout:.0f} s ({exc}); "
                    "is it deployed and started? Under docker compose, `docker compose up` starts every approach, "
                    "`docker compose up orchestrator <approach>...` the named ones") from None
        return addresses

    def _wait_for_expected_replicas(self, hosts: set[str]) -> None:
        """Waits for the expected replicas of `hosts` only: a deployment that runs every
        approach would otherwise hold a study of two of them until all had turned healthy
        (Swarm, 26 approaches starting on 2 cores: the quick study waited for them all)."""
        expected = parse_expected(self.env.get("FIXBENCH_EXPECT_REPLICAS", ""))
        raw = self.env.get("FIXBENCH_EXPECT_TIMEOUT", "300").strip()
        try:
            timeout = float(raw)
        except ValueError:
            raise ExternalRuntimeError(f"FIXBENCH_EXPECT_TIMEOUT={raw!r} is not a number of seconds") from None
        expected = {host: n for host, n in expected.items() if host in hosts}
        if not expected:
            return
        short = wait_for_replicas(expected, max(timeout, 0.0))
        if short:
            names = ", ".join(f"{h} {found}/{n}" for h, (found, n) in sorted(short.items()))
            log.warning("after %.0f s some services list fewer replicas in DNS than expected (%s); "
                        "starting with those there are", timeout, names)

    def log_tail(self, address: str, lines: int = 15) -> str:
        return ""

    def stop(self) -> None:
        """Nothing to stop: the services belong to their engine."""

    def __enter__(self) -> ExternalRuntime:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
