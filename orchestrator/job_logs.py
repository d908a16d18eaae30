"""One log per job under the study's results folder, after the SWE-bench harness: every
attempt (when, which service, how it ended) and the log lines the approach streamed in its
Fix events. `jobs/<key16>.log` is for people; `jobs/<key16>.attempts.jsonl` for tools. The
report links each job's log."""

from __future__ import annotations

import json
import time
from pathlib import Path


def log_name(key: str) -> str:
    """The job's log file, relative to the results folder."""
    return f"jobs/{key[:16]}.log"


class JobLogs:
    def __init__(self, results_dir: str | Path):
        self.root = Path(results_dir)

    def _append(self, name: str, text: str) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)

    def attempt(self, key: str, attempt: int, service: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        self._append(log_name(key), f"=== attempt {attempt} on {service} at {stamp} ===\n")

    def line(self, key: str, text: str) -> None:
        self._append(log_name(key), text.rstrip("\n") + "\n")

    def outcome(self, key: str, attempt: int, service: str, status: str, message: str) -> None:
        self._append(log_name(key), f"--> {status}: {message}\n")
        record = {"attempt": attempt, "service": service, "status": status, "message": message, "time": time.time()}
        self._append(log_name(key).removesuffix(".log") + ".attempts.jsonl", json.dumps(record) + "\n")

    def attempts(self, key: str) -> list[dict]:
        path = self.root / (log_name(key).removesuffix(".log") + ".attempts.jsonl")
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
