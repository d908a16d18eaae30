"""Per-service environments (fixbench.catalog.environments): what they cost.

Prints, measured side by side in one run:
- the time to create a service's environment from a warm uv cache into a fresh folder (the
  numpy-only arachne stack and a torch stack), and to find an existing one (every later start);
- the first-job latency of a one-job study (arachne × the quick fault, one seed) through the
  local runtime, its environment already built, against the same study on the project's own
  interpreter (FIXBENCH_ISOLATED_ENVS=0).

Usage: python benchmarks/bench_environments.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from rich.console import Console  # noqa: E402

from fixbench.catalog import load_manifest  # noqa: E402
from fixbench.catalog.environments import Environments  # noqa: E402
from orchestrator.spec import load_spec  # noqa: E402
from orchestrator.study import run_study  # noqa: E402

BENCH = ROOT / ".fixbench" / "bench"


def create_and_reuse(name: str) -> tuple[float, float]:
    manifest = load_manifest(ROOT / "services" / name)
    Environments().python(manifest)  # the shared root: warms uv's cache
    with tempfile.TemporaryDirectory(prefix="fixbench-envs-") as tmp:
        envs = Environments(tmp)
        started = time.perf_counter()
        envs.python(manifest)
        created = time.perf_counter() - started
        started = time.perf_counter()
        envs.python(manifest)
        return created, time.perf_counter() - started


def one_job_study(isolated: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="fixbench-envbench-") as tmp:
        spec_path = Path(tmp) / "study.yaml"
        spec_path.write_text(yaml.safe_dump({
            "name": "envbench", "suite": "quick", "seeds": [0], "approaches": [{"name": "arachne"}],
            "budget": {"wall_seconds": 300}, "concurrency": {"total": 1}}))
        previous = os.environ.get("FIXBENCH_ISOLATED_ENVS")
        os.environ["FIXBENCH_ISOLATED_ENVS"] = "1" if isolated else "0"
        try:
            started = time.perf_counter()
            run_study(load_spec(spec_path), Path(tmp) / "out", BENCH, Console(quiet=True))
            return time.perf_counter() - started
        finally:
            if previous is None:
                os.environ.pop("FIXBENCH_ISOLATED_ENVS")
            else:
                os.environ["FIXBENCH_ISOLATED_ENVS"] = previous


def main() -> None:
    print("per-service environments")
    for name in ("arachne", "finetune"):
        created, reused = create_and_reuse(name)
        print(f"  {name:<10} created from a warm uv cache in {created:6.2f} s; found again in {reused * 1000:6.1f} ms")
    one_job_study(True)  # builds the fault and arachne's environment once, outside the timings
    isolated, shared = one_job_study(True), one_job_study(False)
    print(f"  first job (arachne, 1-job quick study): own environment {isolated:.2f} s, project interpreter "
          f"{shared:.2f} s, ratio {isolated / shared:.2f}x")


if __name__ == "__main__":
    main()
