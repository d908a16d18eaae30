"""Expands each approach address in FIXBENCH_APPROACHES to one address per replica.

With `docker compose up --scale finetune=3` the name `finetune` resolves to three container
IPs. Given the name alone, the orchestrator opens one round-robin channel and one set of
job slots for it: a job's Check and Fix may then land on different replicas and the Fix calls
bunch up on one. Given one address per replica it keeps `concurrency` slots per replica and
each job stays on the replica it started on, so the replicas share the work.

    python replicas.py "noop=noop:50051;finetune=finetune:50051"
    -> noop=172.18.0.3:50051;finetune=172.18.0.5:50051,172.18.0.6:50051

A name that does not resolve is kept as it is (the orchestrator then waits for it and
reports it by name). Literal IP addresses pass through unchanged.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable

Resolver = Callable[[str, int], list[str]]


def resolve_ipv4(host: str, port: int) -> list[str]:
    """Every IPv4 address `host` resolves to, sorted so the order is the same on every run."""
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sorted({info[4][0] for info in infos}, key=ipaddress.IPv4Address)


def expand_address(address: str, resolve: Resolver) -> list[str]:
    """`host:port` -> one `ip:port` per address the host resolves to (itself if none)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"FIXBENCH_APPROACHES address {address!r} is not host:port")
    try:
        ipaddress.ip_address(host.strip("[]"))
        return [address]
    except ValueError:
        pass
    ips = resolve(host, int(port))
    return [f"{ip}:{port}" for ip in ips] or [address]


def expand(approaches: str, resolve: Resolver = resolve_ipv4) -> str:
    """Rewrites a FIXBENCH_APPROACHES value (`name=host:port[,host:port];...`)."""
    entries = []
    for part in filter(None, (p.strip() for p in approaches.split(";"))):
        name, sep, addresses = part.partition("=")
        if not sep or not name.strip() or not addresses.strip():
            raise ValueError(f"FIXBENCH_APPROACHES entry {part!r} is not name=host:port[,host:port]")
        expanded: list[str] = []
        for address in filter(None, (a.strip() for a in addresses.split(","))):
            expanded += [a for a in expand_address(address, resolve) if a not in expanded]
        entries.append(f"{name.strip()}={','.join(expanded)}")
    return ";".join(entries)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: replicas.py FIXBENCH_APPROACHES-value")
    try:
        print(expand(sys.argv[1]))
    except ValueError as exc:
        sys.exit(f"replicas.py: {exc}")
