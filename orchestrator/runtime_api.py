"""What every runtime (local, docker, external) gives the orchestrator: where the services are.

A runtime starts (or finds) the store, the evaluator and each approach's replicas and answers
with their addresses; the orchestrator only ever talks to addresses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Addresses:
    store: str
    evaluator: str
    approaches: dict[str, list[str]] = field(default_factory=dict)
    # The store's root directory when the orchestrator shares its filesystem (the local
    # runtime): its artifact clients then move blobs without a stream, verified
    # (fixbench.artifacts.client); None elsewhere.
    store_dir: str | None = None


class Runtime(Protocol):
    """A context manager that starts services and stops what it started."""

    # approach name -> why it could not be started; its jobs are recorded with that reason
    unavailable: dict[str, str]

    def start(self, approaches: dict[str, int]) -> Addresses:
        """Starts (or finds) the store, the evaluator and `replicas` of each approach."""

    def log_tail(self, address: str, lines: int = 15) -> str:
        """The last log lines of the service at `address` ('' when the runtime has none)."""

    def stop(self) -> None:
        """Stops exactly what `start` started."""

    def __enter__(self) -> Runtime: ...

    def __exit__(self, *exc) -> None: ...
