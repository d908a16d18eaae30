"""deploy/swarm on a one-node swarm: `docker stack deploy` of the pre-built `:ci` images with
TLS and the token on (secrets from deploy/swarm/make-secrets.sh), the orchestrator as a
one-shot service that runs the compose quick study across two finetune replicas and writes
its results to a bind mount; then, inside a running approach task, plaintext and token-less
calls are refused and the approach can resolve neither the evaluator nor another approach.

The swarm is left as it was found: initialised here (and left afterwards) only when the
engine was not in one. Stack, secrets and the store volume carry a per-run name.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.dockerutil import BENCH_DIR, REPO_ROOT, SERVICE_UID, TAG, run, tail
from tests.container.test_compose_study import JOB_DONE, check_quick_results, read_results

pytestmark = [pytest.mark.container, pytest.mark.slow]

STACK_FILE = REPO_ROOT / "deploy" / "swarm" / "stack.yaml"
MAKE_SECRETS = REPO_ROOT / "deploy" / "swarm" / "make-secrets.sh"
DONE_STATES = ("Complete", "Failed", "Rejected", "Shutdown", "Orphaned")


@pytest.fixture(scope="module")
def swarm() -> Iterator[None]:
    """A swarm manager: this engine's own, or a one-node swarm made here and left afterwards."""
    state = run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"],
                timeout=60).stdout.split()
    initialised = False
    if state[0] == "inactive":
        run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], timeout=120)
        initialised = True
    elif state != ["active", "true"]:
        pytest.fail(f"the engine is in a swarm but not as a usable manager ({' '.join(state)}); "
                    "run this test on a manager node or outside any swarm")
    try:
        yield
    finally:
        if initialised:
            run(["docker", "swarm", "leave", "--force"], timeout=120, check=False)


class Stack:
    """One deployed stack and the secrets it uses, both named `name`."""

    def __init__(self, name: str, env: dict[str, str]):
        self.name = name
        self.env = env

    def service(self, short: str) -> str:
        return f"{self.name}_{short}"

    def task_states(self, short: str) -> list[str]:
        out = run(["docker", "service", "ps", "--no-trunc", "--format", "{{.CurrentState}}|{{.Error}}",
                   self.service(short)], timeout=60).stdout
        return [line for line in out.splitlines() if line.strip()]

    def logs(self, short: str) -> str:
        proc = run(["docker", "service", "logs", "--no-trunc", "--raw", "--details", self.service(short)],
                   timeout=120, check=False)
        return proc.stdout + proc.stderr

    def task_logs(self, short: str) -> str:
        """Log lines prefixed with the task's name (`<stack>_<service>.<slot>.<id>@node | ...`)."""
        proc = run(["docker", "service", "logs", "--no-trunc", self.service(short)], timeout=120, check=False)
        return proc.stdout + proc.stderr

    def container(self, short: str) -> str:
        ids = run(["docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={self.service(short)}"],
                  timeout=60).stdout.split()
        assert ids, f"no running task of {self.service(short)}"
        return ids[0]

    def remove(self) -> None:
        """`docker stack rm`, then (once its containers are gone) its secrets and volume."""
        run(["docker", "stack", "rm", self.name], timeout=120, check=False)
        deadline = time.monotonic() + 120
        label = f"label=com.docker.stack.namespace={self.name}"
        while time.monotonic() < deadline:
            left = run(["docker", "ps", "-aq", "--filter", label], timeout=60, check=False).stdout.split()
            nets = run(["docker", "network", "ls", "-q", "--filter", label], timeout=60, check=False).stdout.split()
            if not left and not nets:
                break
            time.sleep(1)
        secrets = [f"{self.name}_{key}" for key in ("token", "tls_cert", "tls_key", "tls_ca", "store_key")]
        run(["docker", "secret", "rm", *secrets], timeout=60, check=False)
        run(["docker", "volume", "rm", f"{self.name}_store"], timeout=60, check=False)


@pytest.fixture
def stack(swarm: None, images: str, compose_env: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    name = f"fbswarm{uuid.uuid4().hex[:8]}"
    results = tmp_path / "results"
    results.mkdir()
    os.chown(results, SERVICE_UID, SERVICE_UID)
    env = dict(
        compose_env,
        FIXBENCH_TAG=TAG,
        FIXBENCH_SECRETS=name,
        FIXBENCH_RESULTS_DIR=str(results),
        # compose_env made this folder the service user's: faults built by the compose tests are reused
        FIXBENCH_BENCH_DIR=str(BENCH_DIR),
        FIXBENCH_UID=str(SERVICE_UID),
        FIXBENCH_GID=str(SERVICE_UID),
        FIXBENCH_FINETUNE_REPLICAS="2",
        # a CPU limit above the node's count is refused at task start
        FIXBENCH_CPUS=str(min(2, os.cpu_count() or 1)),
        # the study's file, as relative to the stack file
        FIXBENCH_STUDY_FILE="../../studies/compose-quick.yaml",
    )
    run(["bash", str(MAKE_SECRETS), "--out", str(tmp_path / "secrets"), "--prefix", name], timeout=120)
    deployed = Stack(name, env)
    try:
        yield deployed
    finally:
        deployed.remove()


def wait_for_orchestrator(stack: Stack, timeout: float) -> str:
    """The orchestrator task's final state ("Complete ..." when the study exited 0)."""
    deadline = time.monotonic() + timeout
    while True:
        states = stack.task_states("orchestrator")
        if states and states[0].startswith(DONE_STATES):
            return states[0]
        if time.monotonic() > deadline:
            pytest.fail(f"the orchestrator did not finish within {timeout:.0f} s ({states}):\n"
                        + tail(stack.logs("orchestrator")))
        time.sleep(2)


# Run inside an approach task: what an untrusted approach can and cannot reach.
PROBE = textwrap.dedent("""
    import os, socket, grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from fixbench.grpcutil import channel
    from fixbench.security import SecurityConfig
    from fixbench.v1 import repair_pb2, repair_pb2_grpc

    def resolves(host):
        try:
            socket.getaddrinfo(host, 50051, socket.AF_INET)
            return "yes"
        except OSError:
            return "no"

    print("store", resolves("store"))
    print("evaluator", resolves("evaluator"))
    print("other-approach", resolves("finetune"))
    with grpc.insecure_channel("store:50051") as ch:
        try:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            print("plaintext OK")
        except grpc.RpcError as exc:
            print("plaintext", exc.code().name)
    tokenless = SecurityConfig.from_env({k: v for k, v in os.environ.items() if k != "FIXBENCH_TOKEN_FILE"})
    with channel("127.0.0.1:50051", security=tokenless) as ch:
        try:
            repair_pb2_grpc.RepairStub(ch).Describe(repair_pb2.DescribeRequest(), timeout=5)
            print("tokenless OK")
        except grpc.RpcError as exc:
            print("tokenless", exc.code().name)
    with channel("127.0.0.1:50051") as ch:
        print("with-token", repair_pb2_grpc.RepairStub(ch).Describe(repair_pb2.DescribeRequest(), timeout=5).name)
    # the store's signing key stays with the platform; without a job's credential nothing is readable
    print("store-key", "yes" if os.path.exists("/run/secrets/fixbench_store_key") else "no")
    from fixbench.v1 import artifacts_pb2, artifacts_pb2_grpc
    from fixbench.v1.common_pb2 import Digest
    with channel("store:50051") as ch:
        request = artifacts_pb2.DownloadRequest(digest=Digest(sha256="0" * 64, size_bytes=1))
        try:
            list(artifacts_pb2_grpc.ArtifactsStub(ch).Download(request, timeout=10))
            print("unscoped-download OK")
        except grpc.RpcError as exc:
            print("unscoped-download", exc.code().name)
""")


def test_stack_runs_the_quick_study_with_tls_and_token(stack: Stack) -> None:
    deploy = run(["docker", "stack", "deploy", "--resolve-image", "never", "--detach=true",
                  "-c", str(STACK_FILE), stack.name], env=stack.env, timeout=300)
    assert "Creating service" in deploy.stdout, deploy.stdout + deploy.stderr

    final = wait_for_orchestrator(stack, timeout=600)
    assert final.startswith("Complete"), f"orchestrator task: {final}\n" + tail(stack.logs("orchestrator"), 80)
    results = Path(stack.env["FIXBENCH_RESULTS_DIR"])
    check_quick_results(read_results(results))

    # both finetune replicas ran jobs: the external runtime found each task by DNS round
    # robin and spoke TLS to its IP, checking the certificate's shared name
    slots = set()
    for line in stack.task_logs("finetune").splitlines():
        prefix, sep, rest = line.partition("|")
        if sep and JOB_DONE.match(f"x |{rest}"):
            slots.add(prefix.split(".")[1])
    assert slots == {"1", "2"}, tail(stack.task_logs("finetune"))

    # the services are up with the defaults the stack promises
    noop = stack.container("noop")
    settings = run(["docker", "inspect", "-f",
                    "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.PidsLimit}} {{.Config.User}}",
                    noop], timeout=60).stdout.split()
    assert settings == ["true", "[ALL]", "512", "fixbench"], settings

    try:
        probe = subprocess.run(["docker", "exec", "-i", noop, "python", "-"], input=PROBE, capture_output=True,
                               text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the probe inside {noop} hung: {exc}")
    assert probe.returncode == 0, probe.stderr
    found = dict(line.split(" ", 1) for line in probe.stdout.splitlines())
    assert found == {
        "store": "yes",
        "evaluator": "no",  # approaches share no network with the evaluator
        "other-approach": "no",  # nor with another approach
        "plaintext": "UNAVAILABLE",  # the store speaks TLS only
        "tokenless": "UNAUTHENTICATED",  # and every RPC but health needs the token
        "with-token": "noop",
        "store-key": "no",  # the signing key is the platform's: store, evaluator, orchestrator
        "unscoped-download": "PERMISSION_DENIED",  # the store requires a job's signed credential
    }, probe.stdout
