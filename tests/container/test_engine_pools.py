"""Fast checks (no Docker) of how the container tier gives dockerd enough address pools for a
project's networks before it starts the engine."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import yaml

from tests.container.dockerutil import ADDRESS_POOLS, REPO_ROOT, give_engine_small_address_pools


def test_a_missing_configuration_gets_the_pools(tmp_path: Path) -> None:
    config = tmp_path / "docker" / "daemon.json"
    assert give_engine_small_address_pools(config)
    assert json.loads(config.read_text()) == {"default-address-pools": ADDRESS_POOLS}


def test_other_settings_are_kept_and_pools_of_its_own_are_not_replaced(tmp_path: Path) -> None:
    config = tmp_path / "daemon.json"
    config.write_text(json.dumps({"log-driver": "local"}))
    assert give_engine_small_address_pools(config)
    assert json.loads(config.read_text()) == {"log-driver": "local", "default-address-pools": ADDRESS_POOLS}

    own = {"default-address-pools": [{"base": "10.9.0.0/16", "size": 26}]}
    config.write_text(json.dumps(own))
    assert not give_engine_small_address_pools(config)
    assert json.loads(config.read_text()) == own


def test_a_configuration_that_does_not_parse_is_left_untouched(tmp_path: Path) -> None:
    config = tmp_path / "daemon.json"
    config.write_text("{not json")
    assert not give_engine_small_address_pools(config)
    assert config.read_text() == "{not json"


def test_the_pools_are_private_and_hold_several_projects_without_their_largest_range() -> None:
    networks = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())["networks"]
    sizes = []
    for pool in ADDRESS_POOLS:
        base = ipaddress.ip_network(pool["base"])
        assert base.is_private, pool
        sizes.append(2 ** (pool["size"] - base.prefixlen))
    # dockerd skips the candidates that overlap the host's routes; lose the largest range whole
    # and four projects still fit.
    assert sum(sizes) - max(sizes) >= 4 * len(networks)
