"""The external runtime: addresses from the environment, one address per replica."""

import pytest

from orchestrator.runtime_external import (
    ExternalRuntime,
    ExternalRuntimeError,
    expand_replicas,
    parse_approaches,
    resolve_ipv4,
)


def fake_dns(table):
    return lambda host, port: table.get(host, [])


def test_each_name_expands_to_its_replicas():
    dns = fake_dns({"finetune": ["172.18.0.9", "172.18.0.10"], "noop": ["172.18.0.3"]})
    parsed = parse_approaches("noop=noop:50051; finetune=finetune:50051 ;arachne=arachne:50051")
    assert expand_replicas(parsed, dns) == {
        "noop": ["172.18.0.3:50051"],
        "finetune": ["172.18.0.9:50051", "172.18.0.10:50051"],
        "arachne": ["arachne:50051"],  # unresolved: kept, waited for and reported by name
    }


def test_literal_ips_pass_and_duplicates_drop():
    assert expand_replicas(parse_approaches("x=10.0.0.1:7,a:7,[::1]:7"), fake_dns({"a": ["10.0.0.1"]})) == {
        "x": ["10.0.0.1:7", "[::1]:7"]}
    assert resolve_ipv4("127.0.0.1", 1) == ["127.0.0.1"]
    assert resolve_ipv4("no-such-host.invalid", 1) == []


@pytest.mark.parametrize("bad", ["finetune", "finetune=", "=a:1"])
def test_malformed_entries_are_refused(bad):
    with pytest.raises(ExternalRuntimeError, match="FIXBENCH_APPROACHES"):
        parse_approaches(bad)


@pytest.mark.parametrize("bad", ["x=host", "x=host:port"])
def test_malformed_addresses_are_refused(bad):
    with pytest.raises(ExternalRuntimeError, match="not host:port"):
        expand_replicas(parse_approaches(bad), fake_dns({}))


def test_missing_variables_and_approaches_are_named():
    with pytest.raises(ExternalRuntimeError, match="FIXBENCH_STORE, FIXBENCH_EVALUATOR"):
        ExternalRuntime(env={"FIXBENCH_APPROACHES": "noop=a:1"}).start({"noop": 1})
    env = {"FIXBENCH_STORE": "s:1", "FIXBENCH_EVALUATOR": "e:1", "FIXBENCH_APPROACHES": "noop=127.0.0.1:1"}
    with pytest.raises(ExternalRuntimeError, match=r"no address for approach\(es\) \['finetune'\]"):
        ExternalRuntime(env=env).start({"finetune": 1})
