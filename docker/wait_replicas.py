"""Waits until every approach service's DNS name lists as many replicas as the deployment
started, before the orchestrator expands each name into one address per replica.

Swarm (endpoint_mode dnsrr) and Kubernetes (headless Services) put a replica into DNS only
once its health check or readiness probe passes, while the orchestrator starts at the same
moment as the services: expanded too early, a name yields one replica or none, and every
job of that approach would go to a single replica for the whole study.

    FIXBENCH_EXPECT_REPLICAS="noop=1;finetune=2"   host=count pairs (the deployment's replicas)
    FIXBENCH_EXPECT_TIMEOUT=300                    seconds to wait at most

After the timeout it says which names are short and lets the study start with the replicas
that are there (the orchestrator still waits for health itself). Exit status 2 means the
variables are malformed.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping


class ExpectError(ValueError):
    """FIXBENCH_EXPECT_REPLICAS or FIXBENCH_EXPECT_TIMEOUT is malformed; the message says which."""


def parse_expected(text: str) -> dict[str, int]:
    """`host=count;host=count` -> {host: count}; raises ExpectError naming the bad entry."""
    expected: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        host, sep, count = part.partition("=")
        host, count = host.strip(), count.strip()
        if not sep or not host or not count.isdigit() or int(count) < 1:
            raise ExpectError(f"FIXBENCH_EXPECT_REPLICAS entry {part!r} is not host=count (count >= 1)")
        expected[host] = int(count)
    return expected


def resolve_ipv4(host: str) -> set[str]:
    """The IPv4 addresses `host` resolves to now (none when it does not resolve yet)."""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        return set()
    return {str(ipaddress.IPv4Address(info[4][0])) for info in infos}


def shortfall(expected: Mapping[str, int], resolve: Callable[[str], set[str]] = resolve_ipv4) -> dict[str, tuple[int, int]]:
    """{host: (found, expected)} for every host that resolves to fewer addresses than expected."""
    short = {}
    for host, count in expected.items():
        found = len(resolve(host))
        if found < count:
            short[host] = (found, count)
    return short


def wait(expected: Mapping[str, int], timeout: float, resolve: Callable[[str], set[str]] = resolve_ipv4,
         sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> dict[str, tuple[int, int]]:
    """Polls DNS until nothing is short or `timeout` seconds passed; returns what is still short."""
    deadline = clock() + timeout
    while True:
        short = shortfall(expected, resolve)
        if not short or clock() >= deadline:
            return short
        sleep(1.0)


def main(environ: Mapping[str, str] = os.environ) -> int:
    try:
        expected = parse_expected(environ.get("FIXBENCH_EXPECT_REPLICAS", ""))
        raw_timeout = environ.get("FIXBENCH_EXPECT_TIMEOUT", "300").strip()
        try:
            timeout = float(raw_timeout)
        except ValueError:
            raise ExpectError(f"FIXBENCH_EXPECT_TIMEOUT={raw_timeout!r} is not a number of seconds") from None
        if timeout < 0:
            raise ExpectError(f"FIXBENCH_EXPECT_TIMEOUT={raw_timeout!r} is negative")
    except ExpectError as exc:
        print(f"fixbench-orchestrator: {exc}", file=sys.stderr)
        return 2
    if not expected:
        return 0
    short = wait(expected, timeout)
    if short:
        names = ", ".join(f"{host} {found}/{count}" for host, (found, count) in sorted(short.items()))
        print(f"fixbench-orchestrator: after {timeout:.0f} s some services have fewer replicas in DNS than "
              f"expected ({names}); starting with those there are", file=sys.stderr)
    else:
        print("fixbench-orchestrator: every expected replica is in DNS", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
