"""deploy/swarm/stack.yaml without Docker: it parses, runs every approach service compose.yaml
has, with TLS and the token on from the secrets, least-privilege tasks, one internal network
per approach shared only with the store and the orchestrator, and a one-shot orchestrator
that addresses every approach and waits for its replicas."""

from __future__ import annotations

import re

import pytest

from tests.deploy.deployfiles import PLATFORM_SERVICES, compose_approaches, env_pairs, stack

SECRETS = ("fixbench_token", "fixbench_tls_cert", "fixbench_tls_key", "fixbench_tls_ca")
# The signing key of the jobs' scoped store credentials: the platform holds it, approaches never.
KEY_HOLDERS = {"store", "evaluator", "orchestrator"}
STORE_KEY = "fixbench_store_key"
TLS_ENV = {
    "FIXBENCH_TOKEN_FILE": "/run/secrets/fixbench_token",
    "FIXBENCH_TLS_CERT": "/run/secrets/fixbench_tls_cert",
    "FIXBENCH_TLS_KEY": "/run/secrets/fixbench_tls_key",
    "FIXBENCH_TLS_CA": "/run/secrets/fixbench_tls_ca",
    "FIXBENCH_TLS_SERVER_NAME": "fixbench.internal",
}
STACK = stack()
SERVICES = STACK["services"]


def test_stack_is_a_version_3_file_with_only_runtime_services() -> None:
    assert re.fullmatch(r"3\.\d+", STACK["version"]), "docker stack deploy reads compose file format 3.x"
    for name, service in SERVICES.items():
        # stack deploy never builds: images are made beforehand (make images)
        assert "build" not in service, name
        assert service["image"] == f"fixbench/{name}:${{FIXBENCH_TAG:-latest}}", name


def test_stack_has_every_approach_service_compose_has() -> None:
    assert sorted(set(SERVICES) - PLATFORM_SERVICES) == compose_approaches()
    assert {"store", "evaluator", "orchestrator"} <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_tls_token_and_least_privilege(name: str) -> None:
    service = SERVICES[name]
    env = service["environment"]
    for key, value in TLS_ENV.items():
        assert env.get(key) == value, f"{name}: {key}"
    assert "FIXBENCH_TOKEN" not in env
    sources = [s["source"] for s in service["secrets"]]
    assert sorted(sources) == sorted([*SECRETS, *([STORE_KEY] if name in KEY_HOLDERS else [])]), name
    assert env.get("FIXBENCH_STORE_KEY_FILE") == (f"/run/secrets/{STORE_KEY}" if name in KEY_HOLDERS else None), name
    for secret in service["secrets"]:
        assert secret["target"] == secret["source"] and secret["mode"] == 0o400, f"{name}: {secret}"
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"] and service["init"] is True
    # the read-only root's one writable path besides volumes
    assert any(v["type"] == "tmpfs" and v["target"] == "/tmp" for v in service["volumes"]), name
    limits = service["deploy"]["resources"]["limits"]
    assert {"cpus", "memory", "pids"} <= set(limits), name
    assert service["deploy"]["endpoint_mode"] == "dnsrr", "one DNS address per replica, no IPVS"


def test_secrets_are_external_and_named_by_a_prefix() -> None:
    for key in [*SECRETS, STORE_KEY]:
        secret = STACK["secrets"][key]
        assert secret["external"] is True
        # make-secrets.sh creates <prefix>_token, <prefix>_tls_cert, ...
        assert secret["name"] == "${FIXBENCH_SECRETS:-fixbench}_" + key.removeprefix("fixbench_")


@pytest.mark.parametrize("name", compose_approaches())
def test_each_approach_is_alone_on_an_internal_network_with_the_store(name: str) -> None:
    (network,) = SERVICES[name]["networks"]
    assert STACK["networks"][network] == {"driver": "overlay", "internal": True}
    members = {s for s, service in SERVICES.items() if network in service["networks"]}
    assert members == {name, "store", "orchestrator"}, f"{network}: {sorted(members)}"
    env = SERVICES[name]["environment"]
    assert env["FIXBENCH_STORE"] == "store:50051"
    # the SDK's own RLIMIT_DATA stays under the container limit, so a hog reports OOM
    limit = SERVICES[name]["deploy"]["resources"]["limits"]["memory"]
    assert int(env["FIXBENCH_MEMORY_MB"].split(":-")[1].rstrip("}")) < int(limit.split(":-")[1].rstrip("M}"))


@pytest.mark.parametrize("name", compose_approaches())
def test_orchestrator_addresses_each_approach_and_waits_for_its_replicas(name: str) -> None:
    env = SERVICES["orchestrator"]["environment"]
    # found by name (<name>:50051): no address list to keep by hand
    assert "FIXBENCH_APPROACHES" not in env and name in SERVICES
    replicas = SERVICES[name]["deploy"]["replicas"]
    expected = env_pairs(env["FIXBENCH_EXPECT_REPLICAS"], "FIXBENCH_EXPECT_REPLICAS")
    # the same variable (and default) sets the replicas and what the orchestrator waits for
    assert expected[name] == replicas, f"{name}: {expected[name]} != {replicas}"


def test_orchestrator_is_a_one_shot_task_writing_to_host_folders() -> None:
    orchestrator = SERVICES["orchestrator"]
    assert orchestrator["deploy"]["restart_policy"] == {"condition": "none"}
    binds = {v["target"]: v["source"] for v in orchestrator["volumes"] if v["type"] == "bind"}
    assert set(binds) == {"/app/results", "/app/.fixbench/bench"}
    for source in binds.values():
        # required, with a message: stack deploy needs absolute host paths
        assert source.startswith("${") and ":?" in source
    (config,) = orchestrator["configs"]
    assert orchestrator["environment"]["FIXBENCH_STUDY"] == config["target"].removeprefix("/app/")
    assert config["source"] in STACK["configs"]
    assert set(orchestrator["networks"]) == set(STACK["networks"])
    assert SERVICES["evaluator"]["networks"] == ["control"]
