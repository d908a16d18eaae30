"""The docker runtime on a real engine with the `ci` images: `fixbench study run --runtime
docker` runs the quick study and leaves nothing behind (also after a Ctrl-C, and resumes); a
finetune replica killed mid-job is restarted, its job retried and its last log lines kept; a
container that never serves, or keeps exiting, and a missing image give clear errors.

The orchestrator runs here as a local process (as a user runs it); only the services are
containers. About two minutes on two cores with the images built.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.runtime_docker import LABEL_SERVICE, LABEL_STUDY, DockerRuntime, DockerRuntimeError
from tests.conftest import interruptible
from tests.container.dockerutil import REPO_ROOT, tail

pytestmark = [pytest.mark.container, pytest.mark.slow]

# The orchestrator builds the quick fault here, as tests/orchestrator's quick study does.
BENCH = REPO_ROOT / ".fixbench" / "bench"


def spec_text(name: str, finetune_replicas: int = 1, epochs: int = 8) -> str:
    """studies/quick.yaml under another name (labels and ledgers stay apart from other runs)."""
    return f"""name: {name}
suite: quick
seeds: [0, 1, 2]
approaches:
  - name: noop
  - name: finetune
    replicas: {finetune_replicas}
    params: {{epochs: {epochs}, patience: {epochs}}}
budget: {{wall_seconds: 300}}
evaluation: {{properties: [accuracy]}}
concurrency: {{total: 3}}
retry: {{attempts: 6, backoff_seconds: 1}}
"""


@pytest.fixture(scope="module")
def client():
    import docker

    return docker.from_env()


@pytest.fixture
def study(tmp_path: Path, client) -> Iterator[str]:
    """A unique study name; whatever a failing test left labelled with it is removed."""
    name = f"dockerrt-{uuid.uuid4().hex[:8]}"
    yield name
    from orchestrator.runtime_docker import remove_leftovers

    remove_leftovers(name, client=client)


def fixbench(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=interruptible)


def run_cli(*args: str, timeout: float = 600) -> tuple[int, str]:
    proc = fixbench(*args)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def study_args(spec: Path, out: Path, tag: str) -> list[str]:
    return ["study", "run", str(spec), "--runtime", "docker", "--image-tag", tag, "--out", str(out), "--bench", str(BENCH)]


def leftovers(client, study: str) -> list[str]:
    label = {"label": f"{LABEL_STUDY}={study}"}
    return ([f"container {c.name}" for c in client.containers.list(all=True, filters=label)]
            + [f"network {n.name}" for n in client.networks.list(filters=label)]
            + [f"volume {v.name}" for v in client.volumes.list(filters=label)])


def running_jobs(ledger: Path, approach: str) -> int:
    try:
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT count(*) FROM jobs WHERE approach=? AND state='running'",
                              (approach,)).fetchone()[0]
    except sqlite3.Error:
        return 0  # not created yet


def wait_for_running(proc: subprocess.Popen, ledger: Path, approach: str, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while running_jobs(ledger, approach) < count:
        if proc.poll() is not None:
            pytest.fail(f"the study ended (code {proc.returncode}) before {count} {approach} job(s) ran:\n"
                        + tail(proc.stdout.read()))
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{count} {approach} job(s) were not running within {timeout:.0f} s:\n" + tail(proc.stdout.read()))
        time.sleep(0.2)


def check_results(out: Path) -> pd.DataFrame:
    """Every job done; noop NOT_REPAIRED with RR 0, finetune an approach outcome per seed."""
    frame = pd.read_csv(out / "results.csv")
    assert (frame["state"] == "done").all(), frame[["approach", "seed", "state", "status", "message"]].to_string()
    noop = frame[frame["approach"] == "noop"]
    assert sorted(noop["seed"]) == [0, 1, 2] and set(noop["status"]) == {"NOT_REPAIRED"} and (noop["rr"] == 0).all()
    finetune = frame[frame["approach"] == "finetune"]
    assert sorted(finetune["seed"]) == [0, 1, 2]
    assert set(finetune["status"]) <= {"REPAIRED", "NOT_REPAIRED"}, finetune[["status", "message"]].to_string()
    assert finetune["acc_after"].notna().all()
    return finetune


def test_the_quick_study_runs_in_containers_and_resumes_after_ctrl_c(images: str, study: str, tmp_path: Path,
                                                                    client) -> None:
    spec, out = tmp_path / "spec.yaml", tmp_path / "out"
    spec.write_text(spec_text(study, epochs=30))
    proc = fixbench(*study_args(spec, out, images))
    wait_for_running(proc, out / "ledger.sqlite", "finetune", 1)
    assert leftovers(client, study), "the study runs, but no container carries its label"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, tail(output)
    assert leftovers(client, study) == [], "Ctrl-C left containers, a network or a volume behind"

    code, output = run_cli(*study_args(spec, out, images))
    assert code == 0, tail(output, 80)
    assert "6 jobs" in output and "already done" in output
    check_results(out)
    assert leftovers(client, study) == []
    # the containers' logs are kept, as the local runtime keeps its processes' logs
    assert "serving finetune" in (out / "logs" / "finetune-0.log").read_text()


def test_a_replica_killed_mid_job_is_restarted_and_its_job_retried(images: str, study: str, tmp_path: Path,
                                                                  client) -> None:
    spec, out = tmp_path / "spec.yaml", tmp_path / "out"
    # long enough jobs (~10 s) that both replicas are busy when one of them is killed
    spec.write_text(spec_text(study, finetune_replicas=2, epochs=60))
    proc = fixbench(*study_args(spec, out, images))
    wait_for_running(proc, out / "ledger.sqlite", "finetune", 2)
    time.sleep(1)  # into the Fix streams
    (victim,) = client.containers.list(filters={"label": [f"{LABEL_STUDY}={study}", f"{LABEL_SERVICE}=finetune"],
                                                "name": "finetune-0"})
    victim.reload()
    # SIGKILL from outside, as the OOM killer would (`docker kill` counts as a deliberate stop
    # and would keep the restart policy from applying)
    os.kill(victim.attrs["State"]["Pid"], signal.SIGKILL)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, tail(output, 80)

    finetune = check_results(out)
    assert finetune["infra_errors"].sum() >= 1, finetune[["seed", "attempts", "infra_errors"]].to_string()
    log = (out / "orchestrator.log").read_text()
    # the death is recorded with the dead container's last log lines
    assert f"container {victim.name} (127.0.0.1:" in log and "exited with code 137" in log, tail(log)
    death = log[log.index(f"container {victim.name} (127.0.0.1:"):]
    assert "serving finetune on 0.0.0.0:50051" in death, tail(death)
    assert "infrastructure error" in log
    # restarted in place: its whole log holds two starts
    assert (out / "logs" / "finetune-0.log").read_text().count("serving finetune on") >= 2
    assert leftovers(client, study) == []


def test_a_service_that_never_serves_or_keeps_exiting_is_named_with_its_log_lines(images: str, study: str,
                                                                                 tmp_path: Path, client) -> None:
    silent = ["python", "-c", "print('started with a wrong command', flush=True); import time; time.sleep(600)"]
    started = time.monotonic()
    with pytest.raises(DockerRuntimeError) as info:
        DockerRuntime(tmp_path, study, image_tag=images, start_timeout=15, commands={"noop": silent}).start({"noop": 1})
    assert time.monotonic() - started < 60
    message = str(info.value)
    assert f"noop-0 (fixbench/noop:{images})" in message and "did not become healthy" in message, message
    assert "started with a wrong command" in message
    assert leftovers(client, study) == []

    crashing = ["python", "-c", "import sys; print('unknown option --nosuch', flush=True); sys.exit(2)"]
    started = time.monotonic()
    with pytest.raises(DockerRuntimeError) as info:
        DockerRuntime(tmp_path, study, image_tag=images, start_timeout=120,
                      commands={"finetune": crashing}).start({"finetune": 1})
    assert time.monotonic() - started < 60, "a crash loop should fail the start long before the timeout"
    assert f"finetune-0 (fixbench/finetune:{images}) kept exiting" in str(info.value)
    assert "last exit code 2" in str(info.value) and "unknown option --nosuch" in str(info.value)
    assert leftovers(client, study) == []


def test_a_missing_image_says_to_build_it(study: str, tmp_path: Path, client) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text(study))
    code, output = run_cli(*study_args(spec, tmp_path / "out", "no-such-tag"), timeout=300)
    assert code == 2, tail(output)
    words = " ".join(output.split())  # rich wraps long lines
    assert "fixbench/store:no-such-tag" in words and "FIXBENCH_TAG=no-such-tag make images" in words, tail(output)
    assert leftovers(client, study) == []
