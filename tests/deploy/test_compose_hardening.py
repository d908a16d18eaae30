"""compose.yaml's least-privilege settings (deploy/security.md), without Docker: every
running service has a read-only root with tmpfs where it writes, no capabilities, no
privilege escalation and memory / pids limits; each approach is alone with the store and
the orchestrator on an internal network."""

from __future__ import annotations

import pytest

from tests.deploy.deployfiles import compose, compose_approaches

COMPOSE = compose()
RUNNING = sorted(name for name, s in COMPOSE["services"].items() if s.get("scale", 1) != 0)


def test_the_running_services_are_the_platform_and_the_approaches() -> None:
    assert RUNNING == sorted(["store", "evaluator", "orchestrator", *compose_approaches()])


@pytest.mark.parametrize("name", RUNNING)
def test_running_service_is_least_privilege(name: str) -> None:
    service = COMPOSE["services"][name]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"] and "cap_add" not in service
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["mem_limit"] and service["pids_limit"]
    tmpfs = {entry.split(":")[0]: entry for entry in service["tmpfs"]}
    assert "/tmp" in tmpfs
    # a tmpfs takes the image folder's mode but not its owner: the cache is mounted for the
    # services' user, or the non-root service cannot write its cache
    assert "uid=10001" in tmpfs["/data/cache"]
    assert service.get("privileged") is not True and service.get("network_mode") is None


@pytest.mark.parametrize("name", compose_approaches())
def test_each_approach_is_alone_on_an_internal_network(name: str) -> None:
    service = COMPOSE["services"][name]
    (network,) = service["networks"]
    assert COMPOSE["networks"][network].get("internal") is True
    members = {s for s in RUNNING if network in COMPOSE["services"][s].get("networks", [])}
    assert members == {name, "store", "orchestrator"}, f"{network}: {sorted(members)}"
    assert service["environment"]["FIXBENCH_STORE"] == "store:50051"


def test_every_network_is_internal() -> None:
    # nothing downloads at run time, so no service needs a route out
    assert all(net.get("internal") is True for net in COMPOSE["networks"].values())
    assert COMPOSE["services"]["evaluator"]["networks"] == ["control"]
