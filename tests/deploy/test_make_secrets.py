"""deploy/swarm/make-secrets.sh --files-only (no Docker): a CA, one certificate whose SANs
name every service in its Swarm and Kubernetes forms, and a token; reused on a second run;
and the material works for what the deployments do with it: clients dial a replica by IP
and check the shared name fixbench.internal, and the health check dials 127.0.0.1."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fixbench.grpcutil import Server, channel
from fixbench.security import SecurityConfig
from tests.deploy.deployfiles import REPO_ROOT, approach_names

SCRIPT = REPO_ROOT / "deploy" / "swarm" / "make-secrets.sh"
FILES = ("ca.pem", "ca.key", "server.pem", "server.key", "token", "store_key")

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI makes the certificates")


def make(out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--out", str(out), "--files-only", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("secrets") / "out"
    proc = make(out, "--namespace", "lab", env={"FIXBENCH_EXTRA_SANS": "DNS:fixbench.example.org"})
    assert proc.returncode == 0, proc.stderr
    return out


def sans(cert: Path) -> set[str]:
    text = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout
    return {s.strip().replace("IP Address:", "IP:") for s in text.splitlines()[1].split(",")}


def test_files_are_private_and_the_token_is_long(material: Path) -> None:
    assert stat.S_IMODE(material.stat().st_mode) == 0o700
    for name in FILES:
        assert stat.S_IMODE((material / name).stat().st_mode) == 0o600, name
    assert re.fullmatch(r"[0-9a-f]{64}", (material / "token").read_text().strip())
    # a token the services accept (fixbench.security's own rules)
    assert SecurityConfig.from_env({"FIXBENCH_TOKEN_FILE": str(material / "token")}).token


def test_certificate_names_every_service_and_chains_to_the_ca(material: Path) -> None:
    subprocess.run(["openssl", "verify", "-CAfile", str(material / "ca.pem"), str(material / "server.pem")],
                   check=True, capture_output=True)
    names = sans(material / "server.pem")
    assert {"DNS:fixbench.internal", "DNS:localhost", "IP:127.0.0.1", "DNS:fixbench.example.org"} <= names
    for service in ["store", "evaluator", *approach_names()]:
        for form in (service, f"tasks.{service}", f"{service}.lab.svc", f"{service}.lab.svc.cluster.local"):
            assert f"DNS:{form}" in names, form


def test_second_run_reuses_the_material(material: Path) -> None:
    before = {name: (material / name).read_bytes() for name in FILES}
    proc = make(material)
    assert proc.returncode == 0 and "reusing" in proc.stderr
    assert {name: (material / name).read_bytes() for name in FILES} == before


def test_the_store_key_signs_credentials_and_older_material_gains_one(material: Path, tmp_path: Path) -> None:
    from fixbench.security.scope import load_key, mint, verify

    key = load_key({"FIXBENCH_STORE_KEY_FILE": str(material / "store_key")})
    assert re.fullmatch(rb"[0-9a-f]{64}", key) and key != (material / "token").read_bytes().strip()
    assert verify(key, mint(key, "job", ["a" * 64], 10)).may_read("a" * 64)
    older = tmp_path / "older"
    shutil.copytree(material, older)
    (older / "store_key").unlink()  # material made before the key existed
    proc = make(older)
    assert proc.returncode == 0 and "reusing" in proc.stderr and "store_key" in proc.stderr
    assert (older / "server.pem").read_bytes() == (material / "server.pem").read_bytes()  # nothing renewed
    assert re.fullmatch(r"[0-9a-f]{64}", (older / "store_key").read_text().strip())


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    proc = make(tmp_path / "x", "--prefix", "no spaces/here")
    assert proc.returncode == 2 and "--prefix" in proc.stderr
    proc = make(tmp_path / "x", "--bogus")
    assert proc.returncode == 2 and "--bogus" in proc.stderr
    assert not (tmp_path / "x").exists()


def _health(address: str, config: SecurityConfig) -> int:
    with channel(address, security=config) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_material_serves_tls_the_way_the_deployments_dial(material: Path) -> None:
    token = (material / "token").read_text().strip()
    server_config = SecurityConfig(token=token, cert_chain=(material / "server.pem").read_bytes(),
                                   private_key=(material / "server.key").read_bytes())
    server = Server([], [], security=server_config)
    try:
        ca = (material / "ca.pem").read_bytes()
        serving = health_pb2.HealthCheckResponse.SERVING
        # the orchestrator: a replica's IP, checking the shared name
        assert _health(server.address, SecurityConfig(token=token, ca=ca, server_name="fixbench.internal")) == serving
        # the health check: 127.0.0.1 itself is a SAN
        assert _health(server.address, SecurityConfig(ca=ca)) == serving
        # a name the certificate does not carry is refused, as is plaintext
        with pytest.raises(grpc.RpcError) as wrong:
            _health(server.address, SecurityConfig(ca=ca, server_name="intruder.example"))
        assert wrong.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as plain:
            _health(server.address, SecurityConfig())
        assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)
