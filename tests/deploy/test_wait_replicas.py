"""docker/wait_replicas.py: the orchestrator image's wait for every replica to be in DNS."""

from __future__ import annotations

import importlib.util

import pytest

from tests.deploy.deployfiles import REPO_ROOT

_spec = importlib.util.spec_from_file_location("wait_replicas", REPO_ROOT / "docker" / "wait_replicas.py")
wait_replicas = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wait_replicas)


def test_parse_expected() -> None:
    assert wait_replicas.parse_expected(" noop=1; finetune = 3 ;") == {"noop": 1, "finetune": 3}
    assert wait_replicas.parse_expected("") == {}
    for bad in ("noop", "noop=", "=2", "noop=0", "noop=two", "noop=-1"):
        with pytest.raises(wait_replicas.ExpectError, match="FIXBENCH_EXPECT_REPLICAS"):
            wait_replicas.parse_expected(bad)


class FakeDns:
    """Replicas that appear in DNS one poll after another, like tasks turning healthy."""

    def __init__(self, appear: dict[str, list[int]]):
        self.appear = appear  # host -> the poll at which each replica appears
        self.polls = 0
        self.now = 0.0

    def resolve(self, host: str) -> set[str]:
        return {f"10.0.0.{i}" for i, at in enumerate(self.appear.get(host, [])) if at <= self.polls}

    def sleep(self, seconds: float) -> None:
        self.polls += 1
        self.now += seconds

    def clock(self) -> float:
        return self.now


def test_waits_until_every_replica_is_in_dns() -> None:
    dns = FakeDns({"noop": [0], "finetune": [2, 5]})
    short = wait_replicas.wait({"noop": 1, "finetune": 2}, timeout=60, resolve=dns.resolve, sleep=dns.sleep,
                               clock=dns.clock)
    assert short == {} and dns.polls == 5


def test_gives_up_after_the_timeout_and_says_what_is_short() -> None:
    dns = FakeDns({"finetune": [0]})
    short = wait_replicas.wait({"finetune": 3, "arachne": 1}, timeout=4, resolve=dns.resolve, sleep=dns.sleep,
                               clock=dns.clock)
    assert short == {"finetune": (1, 3), "arachne": (0, 1)} and dns.now == 4


def test_main_reports_bad_variables(capsys: pytest.CaptureFixture[str]) -> None:
    assert wait_replicas.main({"FIXBENCH_EXPECT_REPLICAS": "noop=x"}) == 2
    assert "FIXBENCH_EXPECT_REPLICAS" in capsys.readouterr().err
    assert wait_replicas.main({"FIXBENCH_EXPECT_REPLICAS": "noop=1", "FIXBENCH_EXPECT_TIMEOUT": "soon"}) == 2
    assert "FIXBENCH_EXPECT_TIMEOUT" in capsys.readouterr().err
    assert wait_replicas.main({}) == 0


def test_main_resolves_real_names(capsys: pytest.CaptureFixture[str]) -> None:
    # localhost resolves on any machine; one replica is there at once
    assert wait_replicas.main({"FIXBENCH_EXPECT_REPLICAS": "localhost=1", "FIXBENCH_EXPECT_TIMEOUT": "5"}) == 0
    assert "every expected replica" in capsys.readouterr().err
