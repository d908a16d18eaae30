"""The container tier: the images build from the local base image, `docker compose up` runs
the quick study end to end across replicas, a killed service is restarted and its job
retried, every service image answers gRPC health as a non-root user, and arachne's image
has its own stack without torch.

Run with `make test-container` (`pytest -m container tests`); needs root (the sandbox
script starts Docker) and about ten minutes on two cores the first time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.container.dockerutil import REPO_ROOT, ComposeProject, image, run, tail

pytestmark = [pytest.mark.container, pytest.mark.slow]

STUDY = "compose-quick"
SEEDS = 3
# A line the SDK server logs when it finishes a job: "<replica> | ... job 5d1e85f52756: REPAIR_STATUS_..."
JOB_DONE = re.compile(r"^(?P<replica>[\w.-]+)\s*\|.*\bjob [0-9a-f]{6,}: REPAIR_STATUS_(?P<status>\w+)")


def read_results(results_dir: Path) -> pd.DataFrame:
    csv = results_dir / STUDY / "results.csv"
    assert csv.is_file(), f"the orchestrator wrote no {csv}"
    return pd.read_csv(csv)


def check_quick_results(frame: pd.DataFrame) -> pd.DataFrame:
    """noop's rows are NOT_REPAIRED with RR 0; finetune has a finished row per seed. Returns finetune's rows."""
    assert (frame["state"] == "done").all(), frame[["approach", "seed", "state", "status", "message"]].to_string()
    noop = frame[frame["approach"] == "noop"]
    assert len(noop) == SEEDS
    assert set(noop["status"]) == {"NOT_REPAIRED"}
    assert (noop["rr"] == 0).all(), noop["rr"].tolist()
    finetune = frame[frame["approach"] == "finetune"]
    assert sorted(finetune["seed"]) == list(range(SEEDS))
    # approach outcomes, never infrastructure failures
    assert set(finetune["status"]) <= {"REPAIRED", "NOT_REPAIRED"}, finetune["status"].tolist()
    assert finetune["acc_after"].notna().all()
    return finetune


def test_compose_runs_the_quick_study_across_replicas(project: ComposeProject, results_dir: Path) -> None:
    proc = project.up_study(
        "--abort-on-container-exit",
        "--exit-code-from",
        "orchestrator",
        "--scale",
        "finetune=2",
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, (
        f"compose up exited with {proc.returncode}:\n{tail(proc.stdout, 80)}\n{tail(proc.stderr)}"
    )
    check_quick_results(read_results(results_dir))

    logs = project("logs", "--no-color", "finetune").stdout
    replicas = {m["replica"] for m in map(JOB_DONE.match, logs.splitlines()) if m}
    # one job slot per replica: the second replica takes a job while the first trains
    assert replicas == {"finetune-1", "finetune-2"}, tail(logs)
    # The evaluator read the models and splits from the store's read-only volume (verified
    # copies), not by stream: its last job line counts how its fetches went.
    evaluator = [line for line in project("logs", "--no-color", "evaluator").stdout.splitlines() if "fetches so far" in line]
    assert evaluator and "shared fetch" in evaluator[-1] and "stream fetch" not in evaluator[-1], tail("\n".join(evaluator))


def _running_finetune_jobs(project: ComposeProject) -> int:
    """Jobs the ledger shows in flight, read inside the orchestrator container (as its uid,
    so no file of the live SQLite database is created by another user)."""
    query = (
        f"import sqlite3; db = sqlite3.connect('file:results/{STUDY}/ledger.sqlite?mode=ro', uri=True); "
        "print(db.execute(\"SELECT count(*) FROM jobs WHERE approach='finetune' AND state='running'\").fetchone()[0])"
    )
    proc = project("exec", "-T", "orchestrator", "python", "-c", query, timeout=60, check=False)
    return int(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip().isdigit() else 0


def test_a_killed_service_is_restarted_and_its_job_retried(project: ComposeProject, results_dir: Path) -> None:
    # Detached: `up --abort-on-container-exit` would end the whole study at the first crash,
    # restart policy or not.
    project.up_study("--detach", timeout=900)
    deadline = time.monotonic() + 300
    orchestrator = project.container("orchestrator")
    while _running_finetune_jobs(project) == 0:
        state = run(["docker", "inspect", "-f", "{{.State.Status}}", orchestrator], timeout=30).stdout.strip()
        assert state == "running", f"the orchestrator is {state} before any finetune job ran:\n" + tail(
            project("logs", "--no-color", "orchestrator").stdout
        )
        assert time.monotonic() < deadline, "no finetune job started within 300 s:\n" + tail(
            project("logs", "--no-color").stdout
        )
        time.sleep(0.5)
    time.sleep(2)  # into the job's Fix stream (a finetune job trains for ~10 s)

    victim = project.container("finetune")
    pid = int(run(["docker", "inspect", "-f", "{{.State.Pid}}", victim], timeout=30).stdout)
    assert pid > 0, f"{victim} is not running"
    # SIGKILL from outside, as the OOM killer would: Docker sees a crash, not a stop, so
    # `restart: unless-stopped` applies.
    os.kill(pid, signal.SIGKILL)

    code = run(["docker", "wait", orchestrator], timeout=900).stdout.strip()
    logs = project("logs", "--no-color", "orchestrator", "finetune").stdout
    assert code == "0", f"orchestrator exited with {code}:\n{tail(logs, 80)}"

    restarts = int(run(["docker", "inspect", "-f", "{{.RestartCount}}", victim], timeout=30).stdout)
    assert restarts >= 1, f"{victim} was not restarted"
    finetune = check_quick_results(read_results(results_dir))
    # the job that was in flight failed as infrastructure, was retried and then finished
    assert finetune["infra_errors"].sum() >= 1, finetune[["seed", "attempts", "infra_errors"]].to_string()

    # The store ran with the signing key from its volume, and an approach (still running:
    # detached) holds no key and reads nothing without its job's credential.
    assert "scoped credentials required" in project("logs", "--no-color", "store").stdout
    probe = project("exec", "-T", "noop", "python", "-c", UNSCOPED_PROBE, timeout=120, check=False)
    assert probe.stdout.split() == ["no-key", "PERMISSION_DENIED"], probe.stdout + probe.stderr


# Run inside an approach container: no signing key, and the store refuses an unscoped read.
UNSCOPED_PROBE = """
import os, grpc
from fixbench.grpcutil import channel
from fixbench.v1 import artifacts_pb2, artifacts_pb2_grpc
from fixbench.v1.common_pb2 import Digest
print("key" if os.path.exists("/data/keys/store.key") or os.environ.get("FIXBENCH_STORE_KEY") else "no-key")
with channel(os.environ["FIXBENCH_STORE"]) as ch:
    try:
        list(artifacts_pb2_grpc.ArtifactsStub(ch).Download(
            artifacts_pb2.DownloadRequest(digest=Digest(sha256="0" * 64, size_bytes=1)), timeout=10))
        print("read")
    except grpc.RpcError as exc:
        print(exc.code().name)
"""


def _pins(requirements: Path) -> dict[str, str]:
    pins = {}
    for line in requirements.read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[name.strip().lower()] = version.strip()
    return pins


def test_arachne_image_has_its_own_stack_and_no_torch(images: str) -> None:
    no_torch = run(
        ["docker", "run", "--rm", image("arachne"), "python", "-c", "import torch"], timeout=120, check=False
    )
    assert no_torch.returncode != 0
    assert "No module named 'torch'" in no_torch.stderr

    # the same probe succeeds where torch belongs, and it is the CPU build
    with_torch = run(
        [
            "docker",
            "run",
            "--rm",
            image("finetune"),
            "python",
            "-c",
            "import torch; print(torch.__version__, torch.version.cuda)",
        ],
        timeout=120,
    )
    assert with_torch.stdout.split() == ["2.13.0+cpu", "None"]

    pins = _pins(REPO_ROOT / "services" / "arachne" / "requirements.txt")
    stack = run(
        [
            "docker",
            "run",
            "--rm",
            image("arachne"),
            "python",
            "-c",
            "import json, numpy, onnxruntime, fixbench.sdk; "
            "print(json.dumps({'numpy': numpy.__version__, 'onnxruntime': onnxruntime.__version__}))",
        ],
        timeout=120,
    )
    assert json.loads(stack.stdout) == {"numpy": pins["numpy"], "onnxruntime": pins["onnxruntime"]}


def test_service_images_are_healthy_and_not_root(images: str) -> None:
    services = ["store", "noop", "finetune", "arachne", "evaluator"]
    started: list[str] = []
    try:
        for name in services:
            # a short interval only to keep the test fast; the image's check command is used as is
            cid = run(
                ["docker", "run", "--detach", "--health-interval=2s", "--health-start-period=60s", image(name)],
                timeout=120,
            ).stdout.strip()
            started.append(cid)
        deadline = time.monotonic() + 180
        pending = dict(zip(services, started, strict=True))
        while pending:
            for name, cid in list(pending.items()):
                health = run(["docker", "inspect", "-f", "{{.State.Health.Status}}", cid], timeout=30).stdout.strip()
                assert health != "unhealthy", f"{name}: unhealthy\n{run(['docker', 'logs', cid], timeout=30).stderr}"
                if health == "healthy":
                    del pending[name]
            assert time.monotonic() < deadline, f"not healthy within 180 s: {sorted(pending)}"
            time.sleep(1)
        for name, cid in zip(services, started, strict=True):
            uid = run(["docker", "exec", cid, "id", "-u"], timeout=30).stdout.strip()
            assert uid != "0", f"{name} runs as root"
    finally:
        if started:
            run(["docker", "rm", "--force", "--volumes", *started], timeout=120, check=False)
    uid = run(["docker", "run", "--rm", "--entrypoint", "id", image("orchestrator"), "-u"], timeout=60).stdout.strip()
    assert uid != "0", "the orchestrator image runs as root"
