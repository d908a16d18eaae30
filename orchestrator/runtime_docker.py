"""The `docker` runtime: the orchestrator (a local process) starts the store, the evaluator
and `replicas` containers per approach itself through the Docker SDK, from the images that
`make images` builds (`fixbench/<service>:<tag>`), and removes everything it created, by id,
when the study ends — also on Ctrl-C and on errors.

    fixbench study run studies/quick.yaml --runtime docker [--image-tag ci]

What it creates, per run: one bridge network, one volume for the store's blobs, and one
container per service, each labelled `fixbench.study=<study>` and `fixbench.run=<run id>`, so
that leftovers of a killed orchestrator can be found and removed:

    docker rm -f $(docker ps -aq --filter label=fixbench.study=quick)   # or remove_leftovers()

Containers run least-privilege as compose.yaml runs them (read-only root, tmpfs for /tmp
and the cache, no capabilities); an approach's `memory_mb` becomes its RLIMIT_DATA inside
(FIXBENCH_MEMORY_MB) under a container memory limit a little above, `cpu_seconds` a cpu
ulimit. Services find the store by its container name on the network; the orchestrator reaches each
service through its gRPC port published on 127.0.0.1. The host port is chosen here and fixed
(not left to Docker), because Docker gives a restarted container a new random host port and
the scheduler keeps addresses for the whole study.

A container that exits is restarted by Docker (restart policy `unless-stopped`: a serving
process never exits by itself, so even code 0 is a failure); a watcher on Docker's event
stream records every death with the container's last log lines (orchestrator.log), which
`log_tail()` and `exit_cause()` give the scheduler: the job in flight becomes an
infrastructure error carrying those lines and is retried on the next free replica slot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fixbench.security.limits import CPU_HARD_MARGIN_SECONDS, ResourceLimits, describe_exit
from fixbench.security.scope import KEY_ENV, load_key
from orchestrator.runtime_api import Addresses

log = logging.getLogger("fixbench.runtime.docker")

IMAGE_REPOSITORY = "fixbench"
# The port every fixbench image serves on (FIXBENCH_PORT in docker/base.Dockerfile).
SERVICE_PORT = 50051
STORE_MOUNT = "/data/store"
LABEL_STUDY = "fixbench.study"
LABEL_RUN = "fixbench.run"
LABEL_SERVICE = "fixbench.service"
LABEL_OWNER = "fixbench.owner"
# Container names double as DNS names on the network: one label (<= 63 characters).
_DNS_LABEL = 63
# Attempts at publishing on a free host port when another process took it meanwhile.
_PORT_ATTEMPTS = 5
# The uid of the images' service user (docker/base.Dockerfile), owner of the cache tmpfs.
SERVICE_UID = 10001
# Least privilege, as compose.yaml runs the same images (deploy/security.md): a read-only
# root whose only writable paths are the tmpfs mounts (/tmp: HOME, matplotlib; /data/cache:
# the input cache) and the store's volume, no capabilities, no privilege escalation.
HARDENING: dict[str, Any] = {
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges:true"],
    "pids_limit": 512,
    "tmpfs": {"/tmp": "size=512m", "/data/cache": f"size=4g,uid={SERVICE_UID},gid={SERVICE_UID}"},
}
# Container memory above an approach's memory_mb (its RLIMIT_DATA inside), so that a hog
# fails an allocation and is reported as OOM before the kernel's OOM killer ends the
# container without a status.
MEMORY_HEADROOM_MB = 512


def _remove_quietly(remove, what: str, failures: list[str]) -> None:
    """Runs a Docker removal; gone already is fine, any other failure is noted in `failures`."""
    errors = _docker_errors()
    try:
        remove()
    except errors.NotFound:
        pass
    except errors.DockerException as exc:
        failures.append(f"{what}: {exc}")


class DockerRuntimeError(RuntimeError):
    """Docker, an image or a container that cannot serve the study; the message says which
    and what to do (with the container's last log lines where it has any)."""


@dataclass(frozen=True)
class Death:
    """One exit of a container, as Docker's event stream reported it."""

    exit_code: int
    wall_time: float
    log_tail: str


@dataclass
class _Container:
    name: str  # the service instance: store, evaluator, finetune-0, ...
    service: str  # the image's service: store, evaluator, finetune, ...
    image: str
    id: str
    container_name: str
    port: int
    limits: ResourceLimits | None = None
    deaths: list[Death] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def grpc_serving(address: str, timeout: float = 1.0) -> bool:
    """One gRPC health check: True when the server at `address` reports SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from fixbench.grpcutil import channel

    with channel(address) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def free_port() -> int:
    """A loopback port no one listens on now (Docker may still lose a race for it: retried)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def docker_client() -> Any:
    """A client of the Docker engine named by the environment (DOCKER_HOST, or the local socket)."""
    try:
        import docker
    except ImportError:
        raise DockerRuntimeError("the docker runtime needs the Docker SDK for Python: pip install docker") from None
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "the local Docker socket")
        raise DockerRuntimeError(f"cannot reach the Docker engine at {where}: {exc}; is Docker running?") from None
    return client


def _docker_errors() -> Any:
    from docker import errors

    return errors


def image_name(service: str, tag: str) -> str:
    return f"{IMAGE_REPOSITORY}/{service}:{tag}"


def _slug(text: str, length: int) -> str:
    """`text` as a DNS label fragment: lower-case letters, digits and '-'."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")[:length].strip("-") or "study"


def _returncode(exit_code: int) -> int:
    """Docker's exit code as a Popen return code: tini (init) and shells exit 128+N for a
    death by signal N, which describe_exit expects as -N."""
    return -(exit_code - 128) if 128 < exit_code < 128 + 65 else exit_code


def _text(raw: bytes | str) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else raw


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Holds a Ctrl-C back until the block ends, so a second Ctrl-C during cleanup cannot
    leave containers behind; it is raised afterwards. Only the main thread gets SIGINT."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


class DockerRuntime:
    """Starts the services as containers for one study run and removes them afterwards.

    `commands` replaces the image's command of a service (by service name: "store",
    "evaluator" or an approach), for debugging an image. `client` and `probe` are the Docker
    client and the health check (given by tests; by default the engine from the environment
    and a gRPC health check through the published port)."""

    def __init__(self, workdir: str | Path, study: str, image_tag: str = "latest", threads_per_service: int = 1,
                 start_timeout: float = 300.0, limits: dict[str, ResourceLimits] | None = None,
                 commands: dict[str, list[str]] | None = None, client: Any = None,
                 probe: Callable[[str], bool] = grpc_serving, poll_interval: float = 0.5,
                 max_start_restarts: int = 2, environ: dict[str, str] | None = None):
        if not image_tag or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", image_tag):
            raise DockerRuntimeError(f"image tag {image_tag!r} is not a Docker tag (letters, digits, '_', '.', '-')")
        if start_timeout <= 0:
            raise DockerRuntimeError(f"start_timeout={start_timeout}: must be positive")
        self.workdir = Path(workdir).resolve()
        self.unavailable: dict[str, str] = {}  # a missing image is an error at start instead
        self.study = study
        self.image_tag = image_tag
        self.threads = threads_per_service
        self.start_timeout = start_timeout
        self.limits = dict(limits or {})
        self.commands = dict(commands or {})
        self.probe = probe
        self.poll_interval = poll_interval
        self.max_start_restarts = max_start_restarts
        self.environ = dict(os.environ if environ is None else environ)
        # A run id keeps two runs of one study apart; it names things, it decides nothing.
        self.run_id = uuid.uuid4().hex[:8]
        self._prefix = f"fixbench-{_slug(study, 24)}-{self.run_id}"
        self._client = client
        self._containers: list[_Container] = []
        self._network_id: str | None = None
        self._volume_name: str | None = None
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._events: Any = None
        self._watcher: threading.Thread | None = None

    # --- set-up -------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client

    def labels(self, service: str | None = None) -> dict[str, str]:
        labels = {LABEL_STUDY: self.study, LABEL_RUN: self.run_id, LABEL_OWNER: f"{socket.gethostname()}:{os.getpid()}"}
        if service is not None:
            labels[LABEL_SERVICE] = service
        return labels

    def _service_env(self) -> dict[str, str]:
        """Environment of every container; refuses TLS, whose files it does not mount."""
        from fixbench.security.config import SecurityConfig

        tls = sorted(k for k in ("FIXBENCH_TLS_CERT", "FIXBENCH_TLS_KEY", "FIXBENCH_TLS_CA") if self.environ.get(k))
        if tls:
            raise DockerRuntimeError(f"the docker runtime starts plaintext services and mounts no certificates, but "
                                     f"{', '.join(tls)} is set; unset it, or run TLS services with deploy/ and "
                                     f"--runtime external")
        env = {"FIXBENCH_HOST": "0.0.0.0", "FIXBENCH_PORT": str(SERVICE_PORT), "FIXBENCH_THREADS": str(self.threads),
               "OMP_NUM_THREADS": str(self.threads), "PYTHONUNBUFFERED": "1", "HOME": "/tmp"}
        # The orchestrator sends its token with every call (grpcutil), so services must expect it.
        token = SecurityConfig.from_env(self.environ).token
        if token:
            env["FIXBENCH_TOKEN"] = token
        return env

    def _check_images(self, services: list[str]) -> None:
        errors = _docker_errors()
        missing = []
        for service in services:
            try:
                self.client.images.get(image_name(service, self.image_tag))
            except errors.ImageNotFound:
                missing.append(image_name(service, self.image_tag))
        if missing:
            build = "make images" if self.image_tag == "latest" else f"FIXBENCH_TAG={self.image_tag} make images"
            raise DockerRuntimeError(f"image(s) not found: {', '.join(missing)}; build them first with `{build}` "
                                     f"(docker compose build), or pass --image-tag with a tag you built")

    def _container_name(self, name: str) -> str:
        full = f"{self._prefix}-{name}"
        if len(full) > _DNS_LABEL:
            raise DockerRuntimeError(f"service name {name!r} is too long for a container name ({full!r})")
        return full

    def _create(self, name: str, service: str, env: dict[str, str], limits: ResourceLimits | None = None,
                volumes: dict[str, dict[str, str]] | None = None) -> _Container:
        """Creates and starts one container, publishing its gRPC port on a free loopback port."""
        errors = _docker_errors()
        ulimits, memory = None, {}
        if limits is not None and limits.memory_mb is not None:
            memory = {"mem_limit": f"{limits.memory_mb + MEMORY_HEADROOM_MB}m"}
        if limits is not None and limits.cpu_seconds is not None:
            import docker.types

            # Like the local runtime's RLIMIT_CPU; memory is applied by the SDK (FIXBENCH_MEMORY_MB).
            ulimits = [docker.types.Ulimit(name="cpu", soft=limits.cpu_seconds,
                                           hard=limits.cpu_seconds + CPU_HARD_MARGIN_SECONDS)]
        image = image_name(service, self.image_tag)
        container_name = self._container_name(name)
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = free_port()
            try:
                created = self.client.containers.create(
                    image, command=self.commands.get(service), name=container_name, labels=self.labels(service),
                    environment=env, network=self._network_name, ports={f"{SERVICE_PORT}/tcp": ("127.0.0.1", port)},
                    restart_policy={"Name": "unless-stopped"}, init=True, volumes=volumes, ulimits=ulimits,
                    **memory, **HARDENING,
                )
            except errors.APIError as exc:
                raise DockerRuntimeError(f"cannot create container {container_name} ({image}): {exc}") from None
            record = _Container(name, service, image, created.id, container_name, port, limits)
            with self._lock:
                self._containers.append(record)
            try:
                created.start()
                return record
            except errors.APIError as exc:
                # Someone bound the port between free_port() and Docker: try another one.
                taken = "already allocated" in str(exc) or "address already in use" in str(exc).lower()
                self._remove_container(record)
                if not taken or attempt == _PORT_ATTEMPTS:
                    raise DockerRuntimeError(f"container {container_name} ({image}) would not start: {exc}") from None
        raise AssertionError("unreachable")

    @property
    def _network_name(self) -> str:
        return f"{self._prefix}-net"

    def start(self, approaches: dict[str, int]) -> Addresses:
        """Starts the store, the evaluator and `replicas` containers of each approach, and
        waits until every one answers gRPC health through its published port."""
        try:
            services = ["store", "evaluator", *approaches]
            env = self._service_env()
            self._check_images(services)
            self._watch_deaths()
            network = self.client.networks.create(self._network_name, driver="bridge", labels=self.labels())
            self._network_id = network.id
            volume = self.client.volumes.create(name=f"{self._prefix}-store", labels=self.labels("store"))
            self._volume_name = volume.name
            # The signing key of the jobs' store credentials goes to the store and the evaluator
            # only (by value: no file of the host is mounted); approaches never see it.
            key = load_key(self.environ)
            key_env = {KEY_ENV: key.decode()} if key else {}
            store = self._create("store", "store", dict(env, **key_env),
                                 volumes={volume.name: {"bind": STORE_MOUNT, "mode": "rw"}})
            service_env = dict(env, FIXBENCH_STORE=f"{store.container_name}:{SERVICE_PORT}")
            evaluator = self._create("evaluator", "evaluator", dict(service_env, **key_env))
            replicas: dict[str, list[_Container]] = {}
            for name, count in approaches.items():
                limits = self.limits.get(name)
                approach_env = dict(service_env)
                if limits is not None and limits.memory_mb is not None:
                    approach_env["FIXBENCH_MEMORY_MB"] = str(limits.memory_mb)
                replicas[name] = [self._create(f"{name}-{r}", name, approach_env, limits) for r in range(count)]
            self._wait_healthy()
            return Addresses(store=store.address, evaluator=evaluator.address,
                             approaches={n: [c.address for c in cs] for n, cs in replicas.items()})
        except BaseException:
            self.stop()
            raise

    def _inspect(self, record: _Container) -> tuple[str, int, int]:
        """(status, restart count, last exit code) of a container."""
        attrs = self.client.api.inspect_container(record.id)
        state = attrs.get("State", {})
        return state.get("Status", "unknown"), int(attrs.get("RestartCount", 0)), int(state.get("ExitCode", 0))

    def _wait_healthy(self) -> None:
        """Polls every container at once, so one that crashes fails the start at once,
        whatever the others are doing."""
        deadline = time.monotonic() + self.start_timeout
        pending = list(self._containers)
        while True:
            for record in list(pending):
                status, restarts, exit_code = self._inspect(record)
                deaths = len(record.deaths)
                if status in ("exited", "dead", "removing") or max(restarts, deaths) > self.max_start_restarts:
                    how = (f"exited with code {exit_code}" if status in ("exited", "dead")
                           else f"kept exiting (restarted {max(restarts, deaths)} times, last exit code "
                                f"{record.deaths[-1].exit_code if record.deaths else exit_code})")
                    raise DockerRuntimeError(f"container {record.container_name} ({record.image}) {how} while "
                                             f"starting; its last log lines:\n{self._logs(record, 20)}")
                if status == "running" and self.probe(record.address):
                    pending.remove(record)
            if not pending:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(f"{r.container_name} ({r.image})" for r in pending)
                tails = "\n".join(f"--- last log lines of {r.container_name} ---\n{self._logs(r, 20)}" for r in pending)
                raise DockerRuntimeError(f"container(s) {names} did not become healthy (gRPC health on the published "
                                         f"port) within {self.start_timeout:g} s\n{tails}")
            time.sleep(self.poll_interval)

    # --- deaths ---------------------------------------------------------------------------

    def _watch_deaths(self) -> None:
        """Follows Docker's `die` events of this run's containers (started before any of them)."""
        self._events = self.client.events(decode=True, filters={
            "type": "container", "event": "die", "label": f"{LABEL_RUN}={self.run_id}"})
        self._watcher = threading.Thread(target=self._follow, args=(self._events,), name="docker-events", daemon=True)
        self._watcher.start()

    def _follow(self, events: Any) -> None:
        try:
            for event in events:
                self._on_die(event)
        except Exception as exc:  # the stream breaks when stop() closes it; anything else is worth a line
            if not self._stopping.is_set():
                log.warning("lost Docker's event stream (%s): deaths are no longer recorded", exc)

    def _on_die(self, event: dict) -> None:
        if self._stopping.is_set():
            return  # our own removal
        actor = event.get("Actor", {})
        cid = actor.get("ID") or event.get("id", "")
        with self._lock:
            record = next((c for c in self._containers if c.id == cid), None)
        if record is None:
            return
        wall = event["timeNano"] / 1e9 if "timeNano" in event else float(event.get("time", time.time()))
        exit_code = int(actor.get("Attributes", {}).get("exitCode", -1))
        # Lines up to the death only: Docker restarts the container within a moment.
        tail = self._logs(record, 40, until=wall + 0.001)
        death = Death(exit_code, wall, tail)
        with self._lock:
            record.deaths.append(death)
            self._lock.notify_all()
        log.warning("container %s (%s) exited with code %d; Docker restarts it. Its last log lines:\n%s",
                    record.container_name, record.address, exit_code, tail)

    def deaths(self, name: str) -> list[Death]:
        """Exits seen so far of the service instance `name` (e.g. "finetune-0")."""
        with self._lock:
            record = next((c for c in self._containers if c.name == name), None)
            return list(record.deaths) if record else []

    # --- what the scheduler asks ----------------------------------------------------------

    def _by_address(self, address: str) -> _Container | None:
        port = address.rsplit(":", 1)[-1]
        with self._lock:
            return next((c for c in self._containers if str(c.port) == port), None)

    def _logs(self, record: _Container, lines: int, until: float | None = None) -> str:
        errors = _docker_errors()
        try:
            raw = self.client.api.logs(record.id, stdout=True, stderr=True, tail=lines, until=until)
        except errors.DockerException as exc:
            return f"(no logs: {exc})"
        return _text(raw).rstrip("\n") or "(no log lines)"

    def log_tail(self, address: str, lines: int = 15) -> str:
        """The last log lines of the container behind `address`, headed by its name and its
        last exit (so an INFRA_ERROR names the container that failed); '' for an unknown address."""
        record = self._by_address(address)
        if record is None:
            return ""
        with self._lock:
            last = record.deaths[-1] if record.deaths else None
        if last is not None and time.time() - last.wall_time < 60:
            # The restarted container has printed little yet: the dead one's lines say more.
            head = f"container {record.container_name} exited with code {last.exit_code} (restarted by Docker)"
            return f"{head}; its last log lines before that:\n{last.log_tail}"
        return f"container {record.container_name}:\n{self._logs(record, lines)}"

    def exit_cause(self, address: str, since: float, wait: float = 1.0) -> tuple[str, str] | None:
        """(status, message) when the container behind `address` died after monotonic time
        `since` in a way its limits explain (OOM under FIXBENCH_MEMORY_MB, CPU time); else
        None, and the scheduler retries the job as an infrastructure error."""
        record = self._by_address(address)
        if record is None or record.limits is None or not record.limits.any:
            return None
        wall_since = time.time() - (time.monotonic() - since)
        deadline = time.monotonic() + wait
        with self._lock:
            while True:
                death = next((d for d in reversed(record.deaths) if d.wall_time >= wall_since), None)
                left = deadline - time.monotonic()
                if death is not None or left <= 0:
                    break
                # the connection can drop a moment before Docker reports the death
                self._lock.wait(left)
        if death is None:
            return None
        return describe_exit(_returncode(death.exit_code), record.limits, death.log_tail)

    def container_id(self, name: str) -> str | None:
        """Id of the container of service instance `name` ("store", "evaluator", "finetune-1")."""
        with self._lock:
            return next((c.id for c in self._containers if c.name == name), None)

    # --- tear-down ------------------------------------------------------------------------

    def _save_logs(self, record: _Container) -> None:
        """Keeps each container's whole log in <workdir>/logs/<name>.log, as the local runtime does."""
        errors = _docker_errors()
        try:
            raw = self.client.api.logs(record.id, stdout=True, stderr=True)
        except errors.DockerException:
            return
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{record.name}.log", "a", encoding="utf-8") as fh:
            fh.write(f"--- container {record.container_name} ({record.image}), run {self.run_id} ---\n{_text(raw)}")

    def _remove_container(self, record: _Container) -> None:
        errors = _docker_errors()
        try:
            self.client.api.remove_container(record.id, force=True)
        except errors.NotFound:
            pass
        with self._lock:
            if record in self._containers:
                self._containers.remove(record)

    def stop(self) -> None:
        """Removes every container, the network and the volume this runtime created (by id),
        keeping the containers' logs. Safe to call twice; a Ctrl-C waits until it is done."""
        if self._client is None:
            return  # never reached Docker: nothing was created
        errors = _docker_errors()
        with _sigint_deferred():
            self._stopping.set()
            if self._events is not None:
                with contextlib.suppress(Exception):
                    self._events.close()
                self._events = None
            if self._watcher is not None:
                self._watcher.join(timeout=5)
                self._watcher = None
            failures = []
            for record in reversed(list(self._containers)):
                try:
                    self._save_logs(record)
                    self._remove_container(record)
                except errors.DockerException as exc:
                    failures.append(f"container {record.container_name} ({record.id[:12]}): {exc}")
            if self._network_id is not None:
                _remove_quietly(lambda: self.client.api.remove_network(self._network_id),
                                f"network {self._network_name}", failures)
                self._network_id = None
            if self._volume_name is not None:
                _remove_quietly(lambda: self.client.api.remove_volume(self._volume_name),
                                f"volume {self._volume_name}", failures)
                self._volume_name = None
            if failures:
                log.error("could not remove: %s; remove_leftovers(%r) finds them by label", "; ".join(failures),
                          self.study)

    def __enter__(self) -> DockerRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def remove_leftovers(study: str | None = None, client: Any = None) -> list[str]:
    """Removes the containers, networks and volumes that docker runtimes left behind (an
    orchestrator killed with SIGKILL cannot clean up), those of `study` or of every study.
    Returns what it removed. Do not call it while such a study runs."""
    client = client if client is not None else docker_client()
    errors = _docker_errors()
    label = f"{LABEL_STUDY}={study}" if study is not None else LABEL_RUN
    removed = []
    for container in client.containers.list(all=True, filters={"label": label}):
        with contextlib.suppress(errors.NotFound):
            container.remove(force=True)
            removed.append(f"container {container.name}")
    for network in client.networks.list(filters={"label": label}):
        with contextlib.suppress(errors.NotFound):
            network.remove()
            removed.append(f"network {network.name}")
    for volume in client.volumes.list(filters={"label": label}):
        with contextlib.suppress(errors.NotFound):
            volume.remove(force=True)
            removed.append(f"volume {volume.name}")
    return removed
