"""Runs a wrapped original tool under the job's contract (made by `fixbench new-approach --wrap`).

Two halves:
- `install` (standard library only; the Dockerfile runs it at build time, a user or a test runs
  it for a local process): clones the tool's repository at a pinned commit and installs it into
  a virtual environment of its own (`--prefix`, /opt/tool in the image), with the tool's own
  pinned requirements, so its stack never meets the SDK's.
- `run_tool` (inside the service): writes the job's model and splits in the tool's format into a
  work folder, runs the tool's entry command there under the job's budget, and reads its output
  back. The tool's environment comes first on PATH, so `python` in the entry is the tool's.

    python wrap.py install --repo URL --commit SHA --prefix DIR
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

# Fields the entry command may name; each is a path in the work folder or a job value.
ENTRY_FIELDS = ("model", "data", "output", "workdir", "seed", "budget")
DEFAULT_PREFIX = "/opt/tool"


class ToolFailed(RuntimeError):
    """The tool exited non-zero or wrote something unreadable: TOOL_ERROR, with its last log lines."""


# ---- install (build time) ----------------------------------------------------------------


def _run(args: list[str], cwd: str | None = None) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def install(repo: str, commit: str, prefix: str) -> Path:
    """Clones `repo` at `commit` and installs it (with its pinned requirements.txt when it has
    one) into a fresh virtual environment at `prefix`. Returns the prefix."""
    if not repo:
        raise SystemExit("no tool repository given (--repo, the TOOL_REPO build argument)")
    target = Path(prefix)
    with tempfile.TemporaryDirectory(prefix="fixbench-tool-") as tmp:
        src = Path(tmp) / "src"
        _run(["git", "clone", "--quiet", repo, str(src)])
        if commit:
            _run(["git", "-c", "advice.detachedHead=false", "checkout", "--quiet", commit], cwd=str(src))
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True).stdout.strip()
        beside = Path(sys.executable).parent / "uv"
        uv = str(beside) if beside.is_file() else shutil.which("uv")
        if uv:  # fast and offline from its cache where it can be
            _run([uv, "venv", "--quiet", "--python", sys.executable, str(target)])
            pip = [uv, "pip", "install", "--quiet", "--python", str(target / "bin" / "python")]
        else:
            _run([sys.executable, "-m", "venv", str(target)])
            pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-cache-dir"]
        if (src / "requirements.txt").is_file():
            _run(pip + ["-r", str(src / "requirements.txt")])
        _run(pip + [str(src)])
        (target / "TOOL_COMMIT").write_text(f"{repo} {head}\n")
    return target


# ---- run (inside the service) ------------------------------------------------------------


def tool_prefix() -> Path:
    return Path(os.environ.get("FIXBENCH_TOOL_PREFIX") or DEFAULT_PREFIX)


def tool_env(prefix: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{prefix / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(prefix)
    # The SDK's source path would put fixbench's pins in front of the tool's own stack.
    env.pop("PYTHONPATH", None)
    return env


def entry_args(entry: str, fields: dict[str, str], extra: str = "") -> list[str]:
    """The entry command as argv, with {model}, {data}, ... filled in (shell-quoted words, no
    shell: the tool runs as one process group the service can kill)."""
    try:
        text = entry.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"entry command {entry!r} names an unknown field ({exc}); known: "
                         f"{', '.join('{' + f + '}' for f in ENTRY_FIELDS)}") from None
    return shlex.split(text) + shlex.split(extra)


def run_tool(argv: list[str], cwd: Path, env: dict[str, str], ctx, log_lines: int = 20, poll: float = 0.1):
    """Runs argv under the job's budget. Returns its last log lines. Raises BudgetExceeded
    (TIMEOUT) past the budget and Cancelled on cancellation, after killing the whole process
    group; ToolFailed (TOOL_ERROR) with the last log lines on a non-zero exit."""
    from fixbench.sdk import BudgetExceeded, Cancelled

    log_path = cwd / "tool.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise ToolFailed(f"the tool's entry command {argv[0]!r} could not start: {exc}") from exc
        last_progress = 0.0
        try:
            while proc.poll() is None:
                if ctx.cancelled:
                    raise Cancelled("cancelled by the caller; the tool was stopped")
                if ctx.remaining() <= 0:
                    raise BudgetExceeded(f"the tool ran past the {ctx.budget_seconds:g} s budget and was stopped; "
                                         f"last lines:\n{tail(log_path, log_lines)}")
                now = time.monotonic()
                if now - last_progress >= 1.0:
                    last_progress = now
                    budget = ctx.budget_seconds or 0
                    fraction = min(0.95, (now - started) / budget) if budget else 0.0
                    ctx.progress(fraction, "tool", f"running {argv[0]} ({now - started:.0f} s)")
                time.sleep(poll)
        finally:
            if proc.poll() is None:
                _kill(proc)
    lines = tail(log_path, log_lines)
    if proc.returncode != 0:
        raise ToolFailed(f"the tool exited with status {proc.returncode}; its last {log_lines} log lines:\n{lines}")
    return lines


def _kill(proc: subprocess.Popen) -> None:
    """SIGTERM to the tool's process group, SIGKILL after a moment: nothing of it outlives the job."""
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as fh:
            return "\n".join(b.decode("utf-8", "replace") for b in deque(fh.read().splitlines(), maxlen=lines))
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="install a wrapped tool into an environment of its own")
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install")
    inst.add_argument("--repo", required=True, help="git URL or path of the tool's repository")
    inst.add_argument("--commit", default="", help="commit to check out (default: the repository's HEAD)")
    inst.add_argument("--prefix", default=DEFAULT_PREFIX, help="virtual environment to create")
    args = parser.parse_args(argv)
    print(install(args.repo, args.commit, args.prefix))


if __name__ == "__main__":
    main()
