"""Token authentication and TLS through grpcutil.Server / channel / aio_channel, as every
service and client uses them: wrong or missing tokens get UNAUTHENTICATED on every service
but health; TLS and mutual TLS refuse peers without the right certificates."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fixbench.artifacts.client import ArtifactClient, ArtifactError
from fixbench.artifacts.disk import DiskStore
from fixbench.artifacts.server import ArtifactsServicer
from fixbench.grpcutil import Server, aio_channel, channel, wait_healthy
from fixbench.security import SecurityConfig, SecurityConfigError, TokenAuthInterceptor
from fixbench.v1 import artifacts_pb2, artifacts_pb2_grpc
from tests.hostile.certs import make_pki

TOKEN = "s3cret-token-0123456789abcdef"
PLAIN = SecurityConfig()


def store_server(tmp_path, security: SecurityConfig) -> Server:
    disk = DiskStore(tmp_path / "store", max_blob_bytes=1 << 20)
    return Server([lambda s: artifacts_pb2_grpc.add_ArtifactsServicer_to_server(ArtifactsServicer(disk), s)],
                  ["Artifacts"], security=security)


def stat(address: str, security: SecurityConfig, metadata=None, timeout: float = 5.0):
    with channel(address, security=security) as ch:
        stub = artifacts_pb2_grpc.ArtifactsStub(ch)
        return stub.Stat(artifacts_pb2.StatRequest(digest={"sha256": "0" * 64, "size_bytes": 1}),
                         timeout=timeout, metadata=metadata)


def health(address: str, security: SecurityConfig) -> int:
    with channel(address, security=security) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status


@pytest.fixture
def token_server(tmp_path):
    server = store_server(tmp_path, SecurityConfig(token=TOKEN))
    yield server
    server.stop(0)


def test_token_required_on_every_rpc_shape_but_health(token_server, tmp_path):
    addr = token_server.address
    assert stat(addr, SecurityConfig(token=TOKEN)).present is False
    for who, sec, md in [("no token", PLAIN, None), ("wrong token", SecurityConfig(token=TOKEN[:-1] + "X"), None),
                         ("prefix of the token", PLAIN, [("authorization", "Bearer " + TOKEN[:-1])]),
                         ("two headers", PLAIN, [("authorization", "Bearer " + TOKEN), ("authorization", "Bearer x")])]:
        with pytest.raises(grpc.RpcError) as err:
            stat(addr, sec, md)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, who
        assert "bearer token" in err.value.details()
    # client-streaming (Upload) and server-streaming (Download) are guarded too
    with ArtifactClient(addr, tmp_path / "cache") as anonymous:
        with pytest.raises(ArtifactError) as err:
            anonymous.upload_bytes(b"payload")
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(ArtifactError) as err:
            anonymous.fetch(artifacts_pb2.StatRequest(digest={"sha256": "a" * 64, "size_bytes": 3}).digest)
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert not list((tmp_path / "store" / "blobs").rglob("*"))  # nothing written by a stranger
    # probes work without the secret
    assert health(addr, PLAIN) == health_pb2.HealthCheckResponse.SERVING
    wait_healthy(addr, timeout=5)


def test_environment_turns_the_token_on_for_servers_and_clients(tmp_path, monkeypatch):
    monkeypatch.setenv("FIXBENCH_TOKEN", TOKEN)
    server = store_server(tmp_path, security=None)  # from the environment
    try:
        with ArtifactClient(server.address, tmp_path / "cache") as client:  # from the environment too
            digest = client.upload_bytes(b"hello")
            assert client.fetch_bytes(digest) == b"hello"
        monkeypatch.delenv("FIXBENCH_TOKEN")
        with pytest.raises(grpc.RpcError) as err:
            stat(server.address, SecurityConfig.from_env())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop(0)


def test_aio_channel_carries_the_token(token_server):
    async def call(security):
        async with aio_channel(token_server.address, security=security) as ch:
            stub = artifacts_pb2_grpc.ArtifactsStub(ch)
            try:
                reply = await stub.Stat(artifacts_pb2.StatRequest(digest={"sha256": "0" * 64, "size_bytes": 1}), timeout=5)
                return reply.max_blob_bytes
            except grpc.aio.AioRpcError as exc:
                return exc.code()

    assert asyncio.run(call(SecurityConfig(token=TOKEN))) == 1 << 20
    assert asyncio.run(call(PLAIN)) == grpc.StatusCode.UNAUTHENTICATED


def test_token_compare_is_exact():
    check = TokenAuthInterceptor(TOKEN)
    assert check.authorized([("authorization", f"Bearer {TOKEN}")])
    assert check.authorized([("Authorization", f"Bearer {TOKEN}".encode())])
    assert not check.authorized([("authorization", f"bearer {TOKEN}")])
    assert not check.authorized([("authorization", f"Bearer {TOKEN} ")])
    assert not check.authorized([])


def test_tls_and_mutual_tls(tmp_path):
    pki = make_pki(tmp_path / "pki")
    read = lambda p: p.read_bytes()  # noqa: E731
    server_sec = SecurityConfig(cert_chain=read(pki.server_cert), private_key=read(pki.server_key))
    server = store_server(tmp_path / "one-way", server_sec)
    try:
        trusting = SecurityConfig(ca=read(pki.ca))
        assert stat(server.address, trusting).present is False
        assert health(server.address, trusting) == health_pb2.HealthCheckResponse.SERVING
        for who, sec in [("plaintext", PLAIN), ("untrusting", SecurityConfig(ca=read(pki.rogue_cert)))]:
            with pytest.raises(grpc.RpcError) as err:
                stat(server.address, sec, timeout=3)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, who
    finally:
        server.stop(0)

    mutual = SecurityConfig(cert_chain=read(pki.server_cert), private_key=read(pki.server_key), ca=read(pki.ca),
                            client_auth=True, token=TOKEN)
    server = store_server(tmp_path / "mutual", mutual)
    try:
        good = SecurityConfig(ca=read(pki.ca), cert_chain=read(pki.client_cert), private_key=read(pki.client_key),
                              token=TOKEN)
        assert stat(server.address, good).present is False
        no_cert = SecurityConfig(ca=read(pki.ca), token=TOKEN)
        rogue = SecurityConfig(ca=read(pki.ca), cert_chain=read(pki.rogue_cert), private_key=read(pki.rogue_key),
                               token=TOKEN)
        for who, sec in [("no client certificate", no_cert), ("certificate from another CA", rogue)]:
            with pytest.raises(grpc.RpcError) as err:
                stat(server.address, sec, timeout=3)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, who
        # TLS does not replace the token: a valid certificate without it is still refused
        with pytest.raises(grpc.RpcError) as err:
            stat(server.address, SecurityConfig(ca=good.ca, cert_chain=good.cert_chain, private_key=good.private_key))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop(0)


def test_config_from_env_names_the_variable(tmp_path):
    pki = make_pki(tmp_path / "pki")
    cfg = SecurityConfig.from_env({"FIXBENCH_TLS_CERT": str(pki.server_cert), "FIXBENCH_TLS_KEY": str(pki.server_key),
                                   "FIXBENCH_TLS_CA": str(pki.ca), "FIXBENCH_TLS_CLIENT_AUTH": "1"})
    assert cfg.server_tls and cfg.client_tls and cfg.client_auth and cfg.token is None
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert SecurityConfig.from_env({"FIXBENCH_TOKEN_FILE": str(token_file)}).token == TOKEN
    cases = {
        "FIXBENCH_TLS_KEY": {"FIXBENCH_TLS_CERT": str(pki.server_cert)},
        "FIXBENCH_TLS_CA": {"FIXBENCH_TLS_CA": str(tmp_path / "missing.pem")},
        "FIXBENCH_TLS_CLIENT_AUTH": {"FIXBENCH_TLS_CLIENT_AUTH": "maybe"},
        "at least 16": {"FIXBENCH_TOKEN": "short"},
        "only one of": {"FIXBENCH_TOKEN": TOKEN, "FIXBENCH_TOKEN_FILE": str(token_file)},
    }
    for needle, env in cases.items():
        with pytest.raises(SecurityConfigError, match=needle):
            SecurityConfig.from_env(env)
