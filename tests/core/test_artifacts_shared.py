"""Issue 23 item 1: the verified shared-filesystem path. A client told the store's directory
fetches a blob from the store's file (hard link or hashing copy; trusted on the store's
unbroken seal, else hashed first)
and uploads by staging a file that the store Adopts after verifying it; anything odd falls
back to the stream, and a job's scoped calls never take the path."""

from __future__ import annotations

import os
import stat

import grpc
import pytest

from fixbench.artifacts.client import STORE_DIR_ENV, ArtifactClient, ArtifactError
from fixbench.artifacts.digest import CHUNK_BYTES, digest_of_bytes
from fixbench.artifacts.disk import STAGING, DiskStore
from fixbench.artifacts.server import ArtifactsServicer
from fixbench.grpcutil import Server, channel
from fixbench.security.scope import claims_full_access, full_access, mint
from fixbench.v1 import artifacts_pb2, artifacts_pb2_grpc

KEY = b"s" * 32
LIMIT = 8 * 1024 * 1024


class _Counting(ArtifactsServicer):
    """Records which RPCs moved bytes, so a test can tell the shared path from the stream."""

    def __init__(self, store, **kw):
        super().__init__(store, **kw)
        self.calls: list[str] = []

    def Download(self, request, context):
        self.calls.append("Download")
        yield from super().Download(request, context)

    def Upload(self, request_iterator, context):
        self.calls.append("Upload")
        return super().Upload(request_iterator, context)

    def Adopt(self, request, context):
        self.calls.append("Adopt")
        return super().Adopt(request, context)


class _WithoutAdopt(ArtifactsServicer):
    """A store from before Adopt: the generated base class answers UNIMPLEMENTED."""

    Adopt = artifacts_pb2_grpc.ArtifactsServicer.Adopt


def _serve(servicer):
    return Server([lambda s: artifacts_pb2_grpc.add_ArtifactsServicer_to_server(servicer, s)], ["Artifacts"])


@pytest.fixture
def shared(tmp_path):
    """A store, a streaming client (no directory) and a client told the store's directory."""
    disk = DiskStore(tmp_path / "store", max_blob_bytes=LIMIT)
    servicer = _Counting(disk)
    server = _serve(servicer)
    streaming = ArtifactClient(server.address, tmp_path / "stream-cache", timeout=30, store_dir=None)
    near = ArtifactClient(server.address, tmp_path / "near-cache", timeout=30, store_dir=disk.root)
    yield disk, servicer, streaming, near
    streaming.close()
    near.close()
    server.stop(0)


def _empty(folder):
    return not folder.exists() or list(folder.iterdir()) == []


def _adopt(address, digest, name, metadata=None):
    with channel(address) as ch:
        return artifacts_pb2_grpc.ArtifactsStub(ch).Adopt(artifacts_pb2.AdoptRequest(digest=digest, name=name),
                                                          timeout=10, metadata=metadata)


# ---- fetch ---------------------------------------------------------------------------------
def test_shared_fetch_links_the_store_file_without_a_stream(shared):
    disk, servicer, streaming, near = shared
    data = os.urandom(3 * CHUNK_BYTES + 11)
    digest = streaming.upload_bytes(data)
    servicer.calls.clear()
    path = near.fetch(digest)
    assert path.read_bytes() == data and servicer.calls == []
    assert near.transfers == {"shared fetch": 1}
    # a hard link to the store's blob (same filesystem): no bytes were copied
    assert os.stat(path).st_ino == os.stat(disk.path(digest)).st_ino
    assert near.cache.has(digest) and _empty(near.cache.root / "tmp")


def test_a_tampered_file_in_the_directory_is_refused_and_the_stream_brings_the_blob(shared, tmp_path):
    disk, servicer, streaming, _ = shared
    data = os.urandom(5000)
    digest = streaming.upload_bytes(data)
    decoy = tmp_path / "decoy"  # a directory the client takes for the store's: same layout, other bytes
    (decoy / "blobs" / digest.sha256[:2]).mkdir(parents=True)
    (decoy / "blobs" / digest.sha256[:2] / digest.sha256).write_bytes(bytes(5000))
    servicer.calls.clear()
    with ArtifactClient(streaming.address, tmp_path / "c1", timeout=30, store_dir=decoy) as client:
        assert client.fetch_bytes(digest) == data
        assert client.transfers == {"stream fetch": 1} and servicer.calls == ["Download"]
        assert _empty(client.cache.root / "tmp")
    # a file of another size, and a symlink to the right bytes, are refused alike
    (decoy / "blobs" / digest.sha256[:2] / digest.sha256).write_bytes(data + b"x")
    with ArtifactClient(streaming.address, tmp_path / "c2", timeout=30, store_dir=decoy) as client:
        assert client.fetch_bytes(digest) == data and client.transfers == {"stream fetch": 1}
    target = decoy / "blobs" / digest.sha256[:2] / digest.sha256
    target.unlink()
    target.symlink_to(disk.path(digest))
    with ArtifactClient(streaming.address, tmp_path / "c3", timeout=30, store_dir=decoy) as client:
        assert client.fetch_bytes(digest) == data and client.transfers == {"stream fetch": 1}


def test_a_tampered_store_blob_is_never_trusted(shared):
    disk, servicer, streaming, near = shared
    digest = streaming.upload_bytes(os.urandom(4000))
    disk.path(digest).write_bytes(os.urandom(4000))  # same size, other bytes
    with pytest.raises(ArtifactError) as err:
        near.fetch(digest)
    # refused on the shared path, then the stream: the store quarantines its file and says so
    assert err.value.code == grpc.StatusCode.NOT_FOUND and near.transfers == {"stream fetch": 1}
    assert not near.cache.has(digest) and _empty(near.cache.root / "tmp")
    assert list((disk.root / "quarantine").iterdir())


def _no_hash(*args, **kwargs):
    raise AssertionError("hashed a blob that carries the store's seal")


def test_a_sealed_blob_is_linked_without_hashing_it_again(shared, monkeypatch):
    """The store hashed the bytes as they came and sealed the file; a link to that inode
    with the seal unbroken is the store's verified blob, taken without a second sha256."""
    from fixbench.artifacts import disk as disk_module
    from fixbench.artifacts.seal import SEALED_MTIME_NS

    disk, _, streaming, near = shared
    data = os.urandom(2 * CHUNK_BYTES + 5)
    digest = streaming.upload_bytes(data)
    assert os.stat(disk.path(digest)).st_mtime_ns == SEALED_MTIME_NS
    monkeypatch.setattr(disk_module, "sha256_of_mapped", _no_hash)
    path = near.fetch(digest)
    assert path.read_bytes() == data and near.transfers == {"shared fetch": 1}


def test_any_write_breaks_the_seal_and_the_blob_is_hashed(shared, monkeypatch):
    """Rewriting a sealed blob, even with its own bytes, stamps the inode with the current
    time: the next reader hashes it (and here takes it, since the bytes are right)."""
    from fixbench.artifacts import disk as disk_module

    disk, _, streaming, near = shared
    data = os.urandom(5000)
    digest = streaming.upload_bytes(data)
    disk.path(digest).write_bytes(data)
    hashed = []
    real = disk_module.sha256_of_mapped
    monkeypatch.setattr(disk_module, "sha256_of_mapped", lambda fd: hashed.append(fd) or real(fd))
    assert near.fetch(digest).read_bytes() == data and len(hashed) == 1


def test_verify_blobs_always_hashes_even_a_sealed_blob(tmp_path, monkeypatch):
    """What a seal cannot see (bytes changed and the mtime put back, bit rot) is what
    FIXBENCH_VERIFY_BLOBS=always is for: a process then hashes every blob it first trusts."""
    from fixbench.artifacts.seal import SEALED_MTIME_NS

    disk = DiskStore(tmp_path / "store")
    digest = disk.put_bytes(b"the verified bytes")
    path = disk.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"THE VERIFIED BYTES")  # same size, other bytes...
    os.utime(path, ns=(SEALED_MTIME_NS, SEALED_MTIME_NS))  # ...and the seal forged back
    assert DiskStore(tmp_path / "store").has(digest)  # a fresh process takes the seal
    monkeypatch.setenv("FIXBENCH_VERIFY_BLOBS", "always")
    assert not DiskStore(tmp_path / "store").has(digest)  # hashed: found corrupt, quarantined
    assert list((tmp_path / "store" / "quarantine").iterdir())


def test_a_cache_seals_nothing_and_a_fresh_process_hashes_its_files(tmp_path):
    """A client's cache is written without fsync: a seal there could outlive bytes a crash
    tore, so only the process that hashed a cached file trusts it."""
    cache = DiskStore(tmp_path / "cache", durable=False)
    digest = cache.put_bytes(b"cached bytes")
    from fixbench.artifacts.seal import SEALED_MTIME_NS

    assert os.stat(cache.path(digest)).st_mtime_ns != SEALED_MTIME_NS
    assert DiskStore(tmp_path / "cache", durable=False).has(digest)


def test_a_freshly_sealed_temp_file_is_not_taken_for_a_stale_one(tmp_path):
    from fixbench.artifacts.seal import seal

    disk = DiskStore(tmp_path / "store")
    tmp = disk.root / "tmp" / "in-flight"
    tmp.write_bytes(b"being committed")
    with open(tmp, "rb") as fh:
        seal(fh.fileno())
    disk.remove_stale()
    assert tmp.exists()


def test_a_fetch_across_filesystems_is_a_verified_copy(shared, monkeypatch):
    import errno

    disk, _, streaming, near = shared
    data = os.urandom(2 * CHUNK_BYTES + 3)
    digest = streaming.upload_bytes(data)

    def no_link(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    path = near.fetch(digest)
    assert path.read_bytes() == data and near.transfers == {"shared fetch": 1}
    assert os.stat(path).st_ino != os.stat(disk.path(digest)).st_ino


def test_a_job_credential_never_takes_the_directory(tmp_path):
    """The directory goes around the store's scope checks: a client holding a job's scoped
    credential streams, so the store still refuses what the job may not read."""
    disk = DiskStore(tmp_path / "store")
    servicer = _Counting(disk, scope_key=KEY)
    server = _serve(servicer)
    try:
        admin = ArtifactClient(server.address, tmp_path / "admin", timeout=30, scope=full_access(KEY, "orchestrator"),
                               store_dir=disk.root)
        model, test_split = admin.upload_bytes(b"model bytes"), admin.upload_bytes(b"the test split")
        assert admin.transfers == {"adopt": 2}
        job_scope = mint(KEY, "job-7", [model.sha256], write_bytes=100)
        assert not claims_full_access(job_scope) and claims_full_access(full_access(KEY, "x"))
        assert claims_full_access(None) and not claims_full_access("garbage")
        job = ArtifactClient(server.address, tmp_path / "job", timeout=30, scope=job_scope, store_dir=disk.root)
        with pytest.raises(ArtifactError) as err:
            job.fetch(test_split)
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED and job.transfers == {"stream fetch": 1}
        # a per-call job credential on an otherwise full-access client streams too
        servicer.calls.clear()
        with pytest.raises(ArtifactError) as err:
            admin.fetch(test_split, scope=job_scope)
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED and servicer.calls == ["Download"]
        # Adopt refuses a job credential even for a well-formed staged file
        staged = disk.root / STAGING / "from-a-job"
        staged.write_bytes(b"abc")
        with pytest.raises(grpc.RpcError) as rpc_err:
            _adopt(server.address, digest_of_bytes(b"abc"), "from-a-job", metadata=(("x-fixbench-scope", job_scope),))
        assert rpc_err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        admin.close()
        job.close()
    finally:
        server.stop(0)


# ---- upload (Adopt) --------------------------------------------------------------------------
def test_uploads_are_adopted_verified_and_read_only(shared, tmp_path):
    disk, servicer, _, near = shared
    data = os.urandom(3 * CHUNK_BYTES + 1)
    digest = near.upload_bytes(data)
    assert disk.get_bytes(digest) == data and servicer.calls == ["Adopt"]
    assert near.transfers == {"adopt": 1}
    assert near.upload_bytes(data) == digest and near.transfers == {"adopt": 1}  # held: Stat, nothing staged left
    assert _empty(disk.root / STAGING)
    assert not stat.S_IMODE(os.stat(disk.path(digest)).st_mode) & 0o222  # immutable: nobody writes it
    path = tmp_path / "model.onnx"
    path.write_bytes(os.urandom(1234))
    file_digest = near.upload_file(path)
    assert file_digest == digest_of_bytes(path.read_bytes()) and disk.has(file_digest)
    files = [(tmp_path / f"f{i}", None) for i in range(2)]
    for i, (p, _) in enumerate(files):
        p.write_bytes(os.urandom(100 + i))
    assert near.upload_files([(p, digest_of_bytes(p.read_bytes())) for p, _ in files]) == 2
    assert near.transfers == {"adopt": 4}
    assert _empty(disk.root / STAGING) and _empty(disk.root / "tmp")
    # adopting a blob the store holds verifies the staged bytes and keeps the stored file
    before = os.stat(disk.path(file_digest)).st_ino
    (disk.root / STAGING / "again").write_bytes(path.read_bytes())
    assert _adopt(near.address, file_digest, "again").already_present
    assert os.stat(disk.path(file_digest)).st_ino == before and _empty(disk.root / STAGING)


def test_adopt_refuses_a_file_its_stager_writes_while_it_is_hashed(shared, monkeypatch):
    """A stager that kept its file open could change the bytes after the store hashed them;
    the store seals the file before hashing, so such a write breaks the seal and the file is
    refused instead of being stored as verified."""
    import hashlib

    disk, _, _, near = shared
    data = b"staged model bytes"
    staged = disk.root / STAGING / "held-open"
    writer = open(staged, "wb")
    writer.write(data)
    writer.flush()
    real = hashlib.file_digest

    def hash_then_write(fh, name):
        result = real(fh, name)
        writer.seek(0)
        writer.write(data.upper())  # the lingering stager rewrites the bytes just hashed
        writer.flush()
        return result

    monkeypatch.setattr(hashlib, "file_digest", hash_then_write)
    try:
        with pytest.raises(grpc.RpcError) as err:
            _adopt(near.address, digest_of_bytes(data), "held-open")
    finally:
        writer.close()
    assert err.value.code() == grpc.StatusCode.DATA_LOSS and "written while it was hashed" in err.value.details()
    assert not disk.has(digest_of_bytes(data)) and _empty(disk.root / "tmp")


def test_adopt_refuses_a_wrong_digest(shared):
    disk, _, _, near = shared
    staged = disk.root / STAGING / "wrong"
    staged.write_bytes(b"hello world")
    wrong = digest_of_bytes(b"other world")  # same size, other bytes
    with pytest.raises(grpc.RpcError) as err:
        _adopt(near.address, wrong, "wrong")
    assert err.value.code() == grpc.StatusCode.DATA_LOSS and "hash" in err.value.details()
    assert not disk.has(wrong) and _empty(disk.root / STAGING) and _empty(disk.root / "tmp")
    staged.write_bytes(b"hello")
    with pytest.raises(grpc.RpcError) as err:
        _adopt(near.address, wrong, "wrong")
    assert err.value.code() == grpc.StatusCode.DATA_LOSS and "5 bytes" in err.value.details()
    # through the client: refused at once (a stream of the same bytes would be refused alike)
    with pytest.raises(ArtifactError) as client_err:
        near.upload_bytes(b"hello world", digest=wrong)
    assert client_err.value.code == grpc.StatusCode.DATA_LOSS and near.transfers == {}
    assert not disk.has(wrong) and _empty(disk.root / STAGING)


@pytest.mark.parametrize("name", ["../outside", "/etc/passwd", "a/b", "..", ".", ".hidden", "", "x\0y",
                                  "x" * 300, "..\\outside"])
def test_adopt_never_takes_a_path_outside_staging(shared, name):
    disk, _, _, near = shared
    outside = disk.root / "outside"
    outside.write_bytes(b"not staged")
    with pytest.raises(grpc.RpcError) as err:
        _adopt(near.address, digest_of_bytes(b"not staged"), name)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert outside.read_bytes() == b"not staged" and not disk.has(digest_of_bytes(b"not staged"))


def test_adopt_refuses_links_and_what_is_not_a_regular_file(shared):
    disk, _, _, near = shared
    outside = disk.root.parent / "secret"
    outside.write_bytes(b"secret bytes")
    digest = digest_of_bytes(b"secret bytes")
    (disk.root / STAGING / "sym").symlink_to(outside)
    os.link(outside, disk.root / STAGING / "hard")
    (disk.root / STAGING / "dir").mkdir()
    for name in ("sym", "hard", "dir"):
        with pytest.raises(grpc.RpcError) as err:
            _adopt(near.address, digest, name)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, name
    with pytest.raises(grpc.RpcError) as err:
        _adopt(near.address, digest, "never-staged")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert outside.read_bytes() == b"secret bytes" and os.stat(outside).st_nlink == 1
    assert not disk.has(digest) and _empty(disk.root / STAGING) and _empty(disk.root / "tmp")


def test_adopt_refuses_an_oversize_file_and_one_over_the_quota(shared, tmp_path):
    disk, _, _, near = shared
    big = os.urandom(LIMIT + 1)
    (disk.root / STAGING / "big").write_bytes(big)
    with pytest.raises(grpc.RpcError) as err:
        _adopt(near.address, digest_of_bytes(big), "big")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit" in err.value.details()
    # a small announced size does not let a large file through
    (disk.root / STAGING / "big").write_bytes(big)
    with pytest.raises(grpc.RpcError) as err:
        _adopt(near.address, digest_of_bytes(b"small"), "big")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _empty(disk.root / STAGING) and _empty(disk.root / "tmp")
    with pytest.raises(ArtifactError) as client_err:
        near.upload_bytes(big)
    assert client_err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # the quota counts adopted blobs
    quota = DiskStore(tmp_path / "quota-store", max_total_bytes=3000)
    server = _serve(ArtifactsServicer(quota))
    try:
        with ArtifactClient(server.address, tmp_path / "q", timeout=30, store_dir=quota.root) as client:
            client.upload_bytes(os.urandom(2000))
            with pytest.raises(ArtifactError) as quota_err:
                client.upload_bytes(os.urandom(2000))
            assert quota_err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and quota.used_bytes() == 2000
            assert client.transfers == {"adopt": 1}
    finally:
        server.stop(0)


def test_uploads_fall_back_to_the_stream(tmp_path):
    """A store without Adopt, and a directory that is not the store's, both stream."""
    disk = DiskStore(tmp_path / "store")
    server = _serve(_WithoutAdopt(disk))
    try:
        with ArtifactClient(server.address, tmp_path / "c", timeout=30, store_dir=disk.root) as client:
            digest = client.upload_bytes(os.urandom(3000))
            assert disk.has(digest) and client.transfers == {"stream upload": 1}
            assert _empty(disk.root / STAGING)
        wrong = tmp_path / "not-the-store"
        (wrong / STAGING).mkdir(parents=True)
        with ArtifactClient(server.address, tmp_path / "c2", timeout=30, store_dir=wrong) as client:
            digest = client.upload_bytes(os.urandom(3000))  # staged where the store cannot see it
            assert disk.has(digest) and client.transfers == {"stream upload": 1} and _empty(wrong / STAGING)
        with ArtifactClient(server.address, tmp_path / "c3", timeout=30, store_dir=tmp_path / "absent") as client:
            assert disk.has(client.upload_bytes(os.urandom(10))) and client.transfers == {"stream upload": 1}
    finally:
        server.stop(0)


def test_store_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(STORE_DIR_ENV, str(tmp_path / "s"))
    with ArtifactClient("127.0.0.1:1", tmp_path / "c") as client:
        assert client.store_dir == tmp_path / "s"
    monkeypatch.delenv(STORE_DIR_ENV)
    with ArtifactClient("127.0.0.1:1", tmp_path / "c") as client:
        assert client.store_dir is None


def test_the_local_runtime_gives_the_directory_to_the_evaluator_only(tmp_path, monkeypatch):
    """The evaluator (full access) gets FIXBENCH_STORE_DIR; an approach never does, even when
    the orchestrator's own environment has it; the orchestrator's clients get it by Addresses."""
    import orchestrator.runtime_local as rl

    seen = {}

    def fake_spawn(python, args, port, port_file, log_path, threads, limits, cwd=None, withhold=(), extra_env=None):
        from fixbench.launcher import child_env

        seen[args[0] if args[0] != "-m" else args[1]] = child_env(threads, withhold, extra_env)
        return None

    monkeypatch.setattr(rl, "spawn", fake_spawn)
    monkeypatch.setenv(STORE_DIR_ENV, "/somewhere/else")
    runtime = rl.LocalRuntime(tmp_path)
    runtime._popen("python", ["-m", "evaluator", "--store", "x"], 0, tmp_path / "p", tmp_path / "l")
    runtime._popen("python", ["services/noop/approach.py", "--store", "x"], 0, tmp_path / "p", tmp_path / "l")
    runtime._popen("python", ["-m", "fixbench.artifacts", "--root", "r"], 0, tmp_path / "p", tmp_path / "l")
    assert seen["evaluator"][STORE_DIR_ENV] == str(runtime.store_root)
    assert STORE_DIR_ENV not in seen["services/noop/approach.py"]
    assert STORE_DIR_ENV not in seen["fixbench.artifacts"]
