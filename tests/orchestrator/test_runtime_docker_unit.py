"""The docker runtime against a fake Docker client (no engine needed): what it creates and
how, what it removes, and its answers to bad input — a missing image, a container that
never becomes healthy or keeps exiting, a port taken meanwhile, a death mid-study."""

from __future__ import annotations

import os
import queue
import signal
import time
from pathlib import Path

import pytest
from docker import errors

from fixbench.security.limits import ResourceLimits
from orchestrator.runtime_docker import (
    LABEL_RUN,
    LABEL_SERVICE,
    LABEL_STUDY,
    SERVICE_PORT,
    DockerRuntime,
    DockerRuntimeError,
    _sigint_deferred,
    remove_leftovers,
)

TAG = "ci"


class FakeContainer:
    def __init__(self, client: FakeDocker, cid: str, image: str, kwargs: dict):
        self.client, self.id, self.image, self.kwargs = client, cid, image, kwargs
        self.name = kwargs["name"]
        self.labels = kwargs["labels"]
        self.status, self.restarts, self.exit_code = "created", 0, 0
        self.logs = f"{self.name} starting\n"

    @property
    def port(self) -> int:
        return self.kwargs["ports"][f"{SERVICE_PORT}/tcp"][1]

    @property
    def service(self) -> str:
        return self.labels[LABEL_SERVICE]

    def start(self) -> None:
        if self.client.taken_ports and self.port in self.client.taken_ports:
            self.client.taken_ports.discard(self.port)
            raise errors.APIError(f"driver failed: Bind for 127.0.0.1:{self.port} failed: port is already allocated")
        self.status = self.client.status_on_start.get(self.service, "running")
        self.restarts = self.client.restarts_on_start.get(self.service, 0)
        self.logs += self.client.log_on_start.get(self.service, f"serving {self.service}\n")

    def remove(self, force: bool = False) -> None:
        self.client.api.remove_container(self.id, force=force)


class FakeResource:
    def __init__(self, client: FakeDocker, kind: str, rid: str, name: str, labels: dict):
        self.client, self.kind, self.id, self.name, self.labels = client, kind, rid, name, labels

    def remove(self, force: bool = False) -> None:
        getattr(self.client.api, f"remove_{self.kind}")(self.id)


class FakeEvents:
    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self.closed = False

    def __iter__(self):
        while True:
            event = self.queue.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        self.closed = True
        self.queue.put(None)


def _matches(labels: dict, filters: dict | None) -> bool:
    wanted = (filters or {}).get("label")
    if wanted is None:
        return True
    key, sep, value = wanted.partition("=")
    return key in labels and (not sep or labels[key] == value)


class FakeDocker:
    """The parts of docker.DockerClient the runtime uses, with knobs for bad behaviour."""

    def __init__(self, images: set[str] | None = None):
        services = ["store", "evaluator", "noop", "finetune"]
        self.available = images if images is not None else {f"fixbench/{s}:{TAG}" for s in services}
        self.containers_by_id: dict[str, FakeContainer] = {}
        self.networks_by_id: dict[str, FakeResource] = {}
        self.volumes_by_name: dict[str, FakeResource] = {}
        self.removed: list[str] = []
        self.status_on_start: dict[str, str] = {}
        self.restarts_on_start: dict[str, int] = {}
        self.log_on_start: dict[str, str] = {}
        self.unhealthy: set[str] = set()
        self.taken_ports: set[int] = set()
        self.fail_create_at: int | None = None
        self.streams: list[FakeEvents] = []
        self.event_filters: dict | None = None
        self.images, self.containers, self.networks, self.volumes, self.api = (
            _Images(self), _Containers(self), _Networks(self), _Volumes(self), _API(self))

    def events(self, decode: bool = False, filters: dict | None = None) -> FakeEvents:
        assert decode
        self.event_filters = filters
        self.streams.append(FakeEvents())
        return self.streams[-1]

    @property
    def events_stream(self) -> FakeEvents:
        return self.streams[-1]

    def probe(self, address: str) -> bool:
        port = int(address.rsplit(":", 1)[1])
        container = next(c for c in self.containers_by_id.values() if c.port == port)
        return container.status == "running" and container.service not in self.unhealthy

    def by_service(self, service: str) -> list[FakeContainer]:
        return [c for c in self.containers_by_id.values() if c.service == service]


class _Images:
    def __init__(self, client: FakeDocker):
        self.client = client

    def get(self, ref: str) -> str:
        if ref not in self.client.available:
            raise errors.ImageNotFound(f"No such image: {ref}")
        return ref


class _Containers:
    def __init__(self, client: FakeDocker):
        self.client = client
        self.created = 0

    def create(self, image: str, **kwargs) -> FakeContainer:
        self.created += 1
        if self.client.fail_create_at == self.created:
            raise KeyboardInterrupt
        if image not in self.client.available:
            raise errors.ImageNotFound(image)
        container = FakeContainer(self.client, f"c{self.created:04d}", image, kwargs)
        self.client.containers_by_id[container.id] = container
        return container

    def list(self, all: bool = False, filters: dict | None = None) -> list[FakeContainer]:
        return [c for c in self.client.containers_by_id.values() if _matches(c.labels, filters)]


class _Networks:
    def __init__(self, client: FakeDocker):
        self.client = client

    def create(self, name: str, driver: str, labels: dict) -> FakeResource:
        network = FakeResource(self.client, "network", f"n-{name}", name, labels)
        self.client.networks_by_id[network.id] = network
        return network

    def list(self, filters: dict | None = None) -> list[FakeResource]:
        return [n for n in self.client.networks_by_id.values() if _matches(n.labels, filters)]


class _Volumes:
    def __init__(self, client: FakeDocker):
        self.client = client

    def create(self, name: str, labels: dict) -> FakeResource:
        volume = FakeResource(self.client, "volume", name, name, labels)
        self.client.volumes_by_name[name] = volume
        return volume

    def list(self, filters: dict | None = None) -> list[FakeResource]:
        return [v for v in self.client.volumes_by_name.values() if _matches(v.labels, filters)]


class _API:
    def __init__(self, client: FakeDocker):
        self.client = client

    def inspect_container(self, cid: str) -> dict:
        c = self.client.containers_by_id[cid]
        return {"State": {"Status": c.status, "ExitCode": c.exit_code}, "RestartCount": c.restarts}

    def logs(self, cid: str, stdout: bool = True, stderr: bool = True, tail: int | str = "all",
             until: float | None = None) -> bytes:
        if cid not in self.client.containers_by_id:
            raise errors.NotFound(f"No such container: {cid}")
        lines = self.client.containers_by_id[cid].logs.splitlines()
        return ("\n".join(lines if tail == "all" else lines[-tail:]) + "\n").encode()

    def remove_container(self, cid: str, force: bool = False) -> None:
        assert force, "running containers are removed with force"
        if cid not in self.client.containers_by_id:
            raise errors.NotFound(cid)
        del self.client.containers_by_id[cid]
        self.client.removed.append(cid)

    def remove_network(self, nid: str) -> None:
        if nid not in self.client.networks_by_id:
            raise errors.NotFound(f"network {nid} not found")
        name = self.client.networks_by_id[nid].name
        # Docker refuses to remove a network or volume that a container still uses
        if any(c.kwargs["network"] == name for c in self.client.containers_by_id.values()):
            raise errors.APIError(f"network {name} has active endpoints")
        del self.client.networks_by_id[nid]
        self.client.removed.append(nid)

    def remove_volume(self, name: str) -> None:
        if name not in self.client.volumes_by_name:
            raise errors.NotFound(f"get {name}: no such volume")
        if any(name in (c.kwargs["volumes"] or {}) for c in self.client.containers_by_id.values()):
            raise errors.APIError(f"volume is in use: {name}")
        del self.client.volumes_by_name[name]
        self.client.removed.append(name)


def runtime(fake: FakeDocker, tmp_path: Path, **kwargs) -> DockerRuntime:
    kwargs.setdefault("start_timeout", 5.0)
    return DockerRuntime(tmp_path, "quick@0.5", image_tag=TAG, client=fake, probe=fake.probe, poll_interval=0.01,
                         environ={}, **kwargs)


def nothing_left(fake: FakeDocker) -> bool:
    return not fake.containers_by_id and not fake.networks_by_id and not fake.volumes_by_name


def test_start_creates_labelled_containers_on_loopback_ports_and_stop_removes_them(tmp_path):
    fake = FakeDocker()
    rt = runtime(fake, tmp_path, threads_per_service=2)
    addresses = rt.start({"noop": 1, "finetune": 2})

    names = {c.service: [] for c in fake.containers_by_id.values()}
    for c in fake.containers_by_id.values():
        names[c.service].append(c)
    assert {s: len(cs) for s, cs in names.items()} == {"store": 1, "evaluator": 1, "noop": 1, "finetune": 2}
    store = names["store"][0]
    assert addresses.store == f"127.0.0.1:{store.port}"
    assert addresses.evaluator == f"127.0.0.1:{names['evaluator'][0].port}"
    assert addresses.approaches["finetune"] == [f"127.0.0.1:{c.port}" for c in names["finetune"]]
    ports = [c.port for c in fake.containers_by_id.values()]
    assert len(set(ports)) == len(ports)
    (network,) = fake.networks_by_id.values()
    (volume,) = fake.volumes_by_name.values()
    for c in fake.containers_by_id.values():
        kw = c.kwargs
        assert c.image == f"fixbench/{c.service}:{TAG}"
        assert kw["ports"] == {f"{SERVICE_PORT}/tcp": ("127.0.0.1", c.port)}  # never on a public interface
        assert kw["network"] == network.name
        assert kw["restart_policy"] == {"Name": "unless-stopped"} and kw["init"] is True
        # least privilege, as compose.yaml: writable only where a tmpfs or the store volume is
        assert kw["read_only"] is True and kw["cap_drop"] == ["ALL"] and set(kw["tmpfs"]) == {"/tmp", "/data/cache"}
        assert "mem_limit" not in kw  # no memory_mb in this study
        assert c.labels[LABEL_STUDY] == "quick@0.5" and c.labels[LABEL_RUN] == rt.run_id
        assert kw["environment"]["FIXBENCH_THREADS"] == "2" and kw["environment"]["FIXBENCH_HOST"] == "0.0.0.0"
        assert len(c.name) <= 63 and c.name.startswith("fixbench-quick-0-5-")
        if c.service != "store":
            # services reach the store by its container name on the study's network
            assert kw["environment"]["FIXBENCH_STORE"] == f"{store.name}:{SERVICE_PORT}"
    assert store.kwargs["volumes"] == {volume.name: {"bind": "/data/store", "mode": "rw"}}
    assert fake.event_filters == {"type": "container", "event": "die", "label": f"{LABEL_RUN}={rt.run_id}"}

    created = set(fake.containers_by_id) | set(fake.networks_by_id) | set(fake.volumes_by_name)
    rt.stop()
    assert nothing_left(fake) and set(fake.removed) == created
    assert fake.events_stream.closed
    assert "serving finetune" in (tmp_path / "logs" / "finetune-1.log").read_text()
    rt.stop()  # twice is harmless


def test_a_missing_image_is_named_with_how_to_build_it(tmp_path):
    fake = FakeDocker(images={f"fixbench/store:{TAG}", f"fixbench/evaluator:{TAG}"})
    with pytest.raises(DockerRuntimeError) as info:
        runtime(fake, tmp_path).start({"noop": 1, "finetune": 1})
    message = str(info.value)
    assert f"fixbench/noop:{TAG}, fixbench/finetune:{TAG}" in message
    assert f"FIXBENCH_TAG={TAG} make images" in message
    assert fake.containers.created == 0 and nothing_left(fake)


def test_a_container_that_never_becomes_healthy_is_named_with_its_log_lines(tmp_path):
    fake = FakeDocker()
    fake.unhealthy.add("noop")
    fake.log_on_start["noop"] = "listening on the wrong port\n"
    started = time.monotonic()
    with pytest.raises(DockerRuntimeError) as info:
        runtime(fake, tmp_path, start_timeout=0.3).start({"noop": 1, "finetune": 1})
    assert time.monotonic() - started < 3
    message = str(info.value)
    assert "noop-0 (fixbench/noop:ci) did not become healthy" in message and "within 0 s" not in message
    assert "listening on the wrong port" in message
    assert "finetune-0" not in message  # the healthy ones are not blamed
    assert nothing_left(fake)


def test_a_container_that_keeps_exiting_fails_the_start_at_once(tmp_path):
    fake = FakeDocker()
    fake.status_on_start["finetune"] = "restarting"
    fake.restarts_on_start["finetune"] = 3
    fake.log_on_start["finetune"] = "ModuleNotFoundError: No module named 'torch'\n"
    started = time.monotonic()
    with pytest.raises(DockerRuntimeError) as info:
        runtime(fake, tmp_path, start_timeout=60).start({"finetune": 1})
    assert time.monotonic() - started < 3  # not the 60 s timeout
    assert "finetune-0 (fixbench/finetune:ci) kept exiting (restarted 3 times" in str(info.value)
    assert "No module named 'torch'" in str(info.value)
    assert nothing_left(fake)


def test_an_exited_container_fails_the_start_with_its_exit_code(tmp_path):
    fake = FakeDocker()
    fake.status_on_start["evaluator"] = "exited"
    with pytest.raises(DockerRuntimeError, match=r"evaluator \(fixbench/evaluator:ci\) exited with code"):
        runtime(fake, tmp_path).start({})
    assert nothing_left(fake)


def test_a_port_taken_before_docker_binds_it_is_replaced(tmp_path, monkeypatch):
    import orchestrator.runtime_docker as module

    ports = iter([41001, 41002, 41003, 41004, 41005])
    monkeypatch.setattr(module, "free_port", lambda: next(ports))
    fake = FakeDocker()
    fake.taken_ports = {41001}
    rt = runtime(fake, tmp_path)
    addresses = rt.start({})
    assert addresses.store == "127.0.0.1:41002" and addresses.evaluator == "127.0.0.1:41003"
    assert len(fake.containers_by_id) == 2  # the container that lost the race is gone
    rt.stop()


def test_ctrl_c_while_starting_removes_what_was_created(tmp_path):
    fake = FakeDocker()
    fake.fail_create_at = 3  # store and evaluator exist, the first approach container is not made
    with pytest.raises(KeyboardInterrupt):
        runtime(fake, tmp_path).start({"noop": 1})
    assert nothing_left(fake) and len(fake.removed) == 4  # 2 containers, the network, the volume


def _die(fake: FakeDocker, container, exit_code: int, at: float | None = None) -> None:
    fake.events_stream.queue.put({"Type": "container", "Action": "die", "timeNano": int((at or time.time()) * 1e9),
                                  "Actor": {"ID": container.id, "Attributes": {"exitCode": str(exit_code)}}})


def _wait_for_death(rt: DockerRuntime, name: str, count: int = 1) -> None:
    deadline = time.monotonic() + 5
    while len(rt.deaths(name)) < count:
        assert time.monotonic() < deadline, "the death was not recorded"
        time.sleep(0.01)


def test_a_death_mid_study_gives_log_tail_the_dead_containers_lines(tmp_path, caplog):
    fake = FakeDocker()
    with runtime(fake, tmp_path) as rt:
        addresses = rt.start({"finetune": 2})
        victim = next(c for c in fake.by_service("finetune") if c.port == int(addresses.approaches["finetune"][1].split(":")[1]))
        victim.logs += "epoch 3/8 loss 0.41\n"
        _die(fake, victim, 137)
        _wait_for_death(rt, "finetune-1")
        victim.logs += "restarted, serving again\n"
        tail = rt.log_tail(addresses.approaches["finetune"][1])
        assert f"container {victim.name} exited with code 137" in tail
        assert "epoch 3/8 loss 0.41" in tail and "serving again" not in tail
        other = rt.log_tail(addresses.approaches["finetune"][0])
        assert other.startswith("container ") and "serving finetune" in other and "exited" not in other
        assert rt.log_tail("127.0.0.1:1") == ""
        assert f"{victim.name}" in caplog.text and "epoch 3/8 loss 0.41" in caplog.text


def test_exit_cause_blames_limits_only_for_deaths_they_explain(tmp_path):
    fake = FakeDocker()
    limits = {"finetune": ResourceLimits(memory_mb=512, cpu_seconds=30)}
    with runtime(fake, tmp_path, limits=limits) as rt:
        addresses = rt.start({"finetune": 1, "noop": 1})
        (finetune,) = fake.by_service("finetune")
        (noop,) = fake.by_service("noop")
        address = addresses.approaches["finetune"][0]
        assert finetune.kwargs["environment"]["FIXBENCH_MEMORY_MB"] == "512"
        assert finetune.kwargs["mem_limit"] == "1024m"  # room above the SDK's own limit
        (ulimit,) = finetune.kwargs["ulimits"]
        assert (ulimit["Name"], ulimit["Soft"], ulimit["Hard"]) == ("cpu", 30, 35)
        assert "FIXBENCH_MEMORY_MB" not in noop.kwargs["environment"] and noop.kwargs["ulimits"] is None

        since = time.monotonic()
        assert rt.exit_cause(address, since, wait=0.05) is None  # alive
        _die(fake, finetune, 128 + signal.SIGXCPU)  # tini's code for a child killed by SIGXCPU
        _wait_for_death(rt, "finetune-0")
        status, message = rt.exit_cause(address, since)
        assert status == "TIMEOUT" and "30 s" in message
        # a death before the failed call began is not its cause
        assert rt.exit_cause(address, time.monotonic() + 1, wait=0.05) is None

        since = time.monotonic()
        _die(fake, finetune, 137)  # SIGKILL comes from outside: retried, not an outcome
        _wait_for_death(rt, "finetune-0", 2)
        assert rt.exit_cause(address, since) is None

        since = time.monotonic()
        finetune.logs += "MemoryError\n"
        _die(fake, finetune, 1)
        _wait_for_death(rt, "finetune-0", 3)
        assert rt.exit_cause(address, since)[0] == "OOM"

        _die(fake, noop, 1)
        _wait_for_death(rt, "noop-0")
        assert rt.exit_cause(addresses.approaches["noop"][0], since) is None  # no limits, nothing to blame


def test_tls_settings_are_refused_and_the_token_is_passed_on(tmp_path):
    fake = FakeDocker()
    rt = DockerRuntime(tmp_path, "s", image_tag=TAG, client=fake, probe=fake.probe,
                       environ={"FIXBENCH_TLS_CERT": "/c.pem", "FIXBENCH_TLS_KEY": "/k.pem"})
    with pytest.raises(DockerRuntimeError, match="FIXBENCH_TLS_CERT, FIXBENCH_TLS_KEY is set"):
        rt.start({})
    assert nothing_left(fake)
    token = "t" * 32
    with DockerRuntime(tmp_path, "s", image_tag=TAG, client=fake, probe=fake.probe, poll_interval=0.01,
                       environ={"FIXBENCH_TOKEN": token}) as rt:
        rt.start({"noop": 1})
        assert {c.kwargs["environment"].get("FIXBENCH_TOKEN") for c in fake.containers_by_id.values()} == {token}


@pytest.mark.parametrize("tag", ["", "bad tag", "x/y", ":"])
def test_a_malformed_image_tag_is_refused(tmp_path, tag):
    with pytest.raises(DockerRuntimeError, match="is not a Docker tag"):
        DockerRuntime(tmp_path, "s", image_tag=tag, client=FakeDocker())


def test_remove_leftovers_finds_a_studys_things_by_label(tmp_path):
    fake = FakeDocker()
    mine = runtime(fake, tmp_path)
    mine.start({"noop": 1})
    other = DockerRuntime(tmp_path, "other", image_tag=TAG, client=fake, probe=fake.probe, poll_interval=0.01,
                          environ={})
    other.start({})
    removed = remove_leftovers("quick@0.5", client=fake)  # as after a SIGKILLed orchestrator
    assert sorted(r.split()[0] for r in removed) == ["container"] * 3 + ["network", "volume"]
    assert {c.labels[LABEL_STUDY] for c in fake.containers_by_id.values()} == {"other"}
    mine.stop()  # finds its things gone: no error
    other.stop()
    assert nothing_left(fake)


def test_a_ctrl_c_during_cleanup_waits_until_the_cleanup_is_done():
    # Python's own handler first: a test process started in the background or as an xdist
    # worker inherits SIGINT ignored, and the deferral restores whatever was there.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        steps = []
        with pytest.raises(KeyboardInterrupt):
            with _sigint_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                steps.append("cleanup finished")
        assert steps == ["cleanup finished"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_study_picks_the_docker_runtime_and_checks_the_options(tmp_path, monkeypatch):
    from orchestrator.spec import StudySpec
    from orchestrator.study import StudyError, make_runtime

    spec = StudySpec.model_validate({"name": "q", "suite": "quick", "seeds": [0], "runtime": "docker",
                                     "approaches": [{"name": "noop", "memory_mb": 256}],
                                     "budget": {"wall_seconds": 10}})
    monkeypatch.setenv("FIXBENCH_TAG", "nightly")
    rt = make_runtime(spec.runtime, spec, tmp_path)
    assert isinstance(rt, DockerRuntime) and rt.image_tag == "nightly" and rt.study == "q"
    assert rt.limits["noop"] == ResourceLimits(memory_mb=256)
    assert make_runtime("docker", spec, tmp_path, image_tag="ci").image_tag == "ci"
    with pytest.raises(StudyError, match="--image-tag applies to the docker runtime only"):
        make_runtime("local", spec, tmp_path, image_tag="ci")
    with pytest.raises(StudyError, match="unknown runtime 'kubernetes'"):
        make_runtime("kubernetes", spec, tmp_path)


def test_the_store_key_goes_to_the_store_and_the_evaluator_only(tmp_path):
    key_file = tmp_path / ".store.key"
    key_file.write_text("k" * 64)
    fake = FakeDocker()
    with DockerRuntime(tmp_path, "s", image_tag=TAG, client=fake, probe=fake.probe, poll_interval=0.01,
                       environ={"FIXBENCH_STORE_KEY_FILE": str(key_file)}) as rt:
        rt.start({"noop": 1, "finetune": 1})
        keys = {c.kwargs["labels"][LABEL_SERVICE]: c.kwargs["environment"].get("FIXBENCH_STORE_KEY")
                for c in fake.containers_by_id.values()}
    assert keys["store"] == keys["evaluator"] == "k" * 64
    assert {name: key for name, key in keys.items() if name not in ("store", "evaluator")} == {"noop": None, "finetune": None}
    assert not any("FIXBENCH_STORE_KEY_FILE" in c.kwargs["environment"] for c in fake.containers_by_id.values())
