"""The external runtime: addresses from the environment, one address per replica."""

import pytest

from orchestrator.runtime_external import (
    ExternalRuntime,
    ExternalRuntimeError,
    expand_replicas,
    parse_approaches,
    parse_expected,
    resolve_ipv4,
    wait_for_replicas,
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
    env = {"FIXBENCH_STORE": "s:1", "FIXBENCH_EVALUATOR": "e:1", "FIXBENCH_APPROACH_PORT": "50x"}
    with pytest.raises(ExternalRuntimeError, match="FIXBENCH_APPROACH_PORT"):
        ExternalRuntime(env=env).start({"finetune": 1})


def test_approaches_are_found_by_name_unless_listed(monkeypatch):
    """No address list: an approach the study names is dialled at <name>:50051, its service
    name in every deployment; FIXBENCH_APPROACHES still overrides one."""
    dialled: list[str] = []
    monkeypatch.setattr("orchestrator.runtime_external.wait_healthy", lambda address, timeout: dialled.append(address))
    env = {"FIXBENCH_STORE": "s:1", "FIXBENCH_EVALUATOR": "e:1", "FIXBENCH_APPROACHES": "noop=127.0.0.1:7",
           "FIXBENCH_EXPAND_REPLICAS": "0"}
    addresses = ExternalRuntime(env=env).start({"noop": 1, "my-fix": 1})
    assert addresses.approaches == {"noop": ["127.0.0.1:7"], "my-fix": ["my-fix:50051"]}
    assert dialled == ["s:1", "e:1", "127.0.0.1:7", "my-fix:50051"]


def test_an_approach_that_never_answers_is_named_with_how_to_start_it(monkeypatch):
    def health(address, timeout):
        if address.startswith("my-fix"):
            raise TimeoutError(f"{address} did not become healthy within {timeout:.0f} s (last: UNAVAILABLE)")

    monkeypatch.setattr("orchestrator.runtime_external.wait_healthy", health)
    env = {"FIXBENCH_STORE": "s:1", "FIXBENCH_EVALUATOR": "e:1", "FIXBENCH_EXPAND_REPLICAS": "0"}
    with pytest.raises(ExternalRuntimeError, match=r"approach 'my-fix' at my-fix:50051 .*docker compose up orchestrator"):
        ExternalRuntime(env=env, health_timeout=3).start({"noop": 1, "my-fix": 1})


def test_expected_replicas_parse():
    assert parse_expected(" noop=1; finetune = 3 ;") == {"noop": 1, "finetune": 3}
    assert parse_expected("") == {}
    for bad in ("noop", "noop=", "=2", "noop=0", "noop=two", "noop=-1"):
        with pytest.raises(ExternalRuntimeError, match="FIXBENCH_EXPECT_REPLICAS"):
            parse_expected(bad)


class ReplicasAppearing:
    """Replicas that appear in DNS one poll after another, like tasks turning healthy."""

    def __init__(self, appear):
        self.appear, self.polls, self.now = appear, 0, 0.0

    def resolve(self, host, port):
        return [f"10.0.0.{i}" for i, at in enumerate(self.appear.get(host, [])) if at <= self.polls]

    def sleep(self, seconds):
        self.polls += 1
        self.now += seconds

    def clock(self):
        return self.now


def test_waits_until_every_expected_replica_is_in_dns():
    dns = ReplicasAppearing({"noop": [0], "finetune": [2, 5]})
    assert wait_for_replicas({"noop": 1, "finetune": 2}, 60, dns.resolve, dns.sleep, dns.clock) == {}
    assert dns.polls == 5


def test_gives_up_after_the_timeout_and_says_what_is_short():
    dns = ReplicasAppearing({"finetune": [0]})
    short = wait_for_replicas({"finetune": 3, "arachne": 1}, 4, dns.resolve, dns.sleep, dns.clock)
    assert short == {"finetune": (1, 3), "arachne": (0, 1)} and dns.now == 4


def test_bad_expect_timeout_is_named():
    env = {"FIXBENCH_STORE": "s:1", "FIXBENCH_EVALUATOR": "e:1", "FIXBENCH_APPROACHES": "noop=127.0.0.1:1",
           "FIXBENCH_EXPECT_REPLICAS": "localhost=1", "FIXBENCH_EXPECT_TIMEOUT": "soon"}
    with pytest.raises(ExternalRuntimeError, match="FIXBENCH_EXPECT_TIMEOUT"):
        ExternalRuntime(env=env).start({"noop": 1})


def test_waits_only_for_the_replicas_of_the_studys_approaches(monkeypatch):
    # The deployment lists every approach; a study of noop waits for noop, not for arachne.
    waited = []
    monkeypatch.setattr("orchestrator.runtime_external.wait_for_replicas",
                        lambda expected, timeout: waited.append(dict(expected)) or {})
    monkeypatch.setattr("orchestrator.runtime_external.wait_healthy", lambda address, timeout: None)
    env = {"FIXBENCH_STORE": "s:1", "FIXBENCH_EVALUATOR": "e:1", "FIXBENCH_EXPAND_REPLICAS": "0",
           "FIXBENCH_EXPECT_REPLICAS": "noop=1;finetune=2;arachne=1"}
    ExternalRuntime(env=env).start({"noop": 1, "finetune": 1})
    assert waited == [{"noop": 1, "finetune": 2}]
    # noop given by address: no name of the study is in the list, so nothing is waited for
    ExternalRuntime(env={**env, "FIXBENCH_APPROACHES": "noop=10.0.0.9:50051"}).start({"noop": 1})
    assert len(waited) == 1
