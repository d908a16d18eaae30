"""What a conformance run found: one line per check, printable as a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["pass", "fail", "skip"]
STATUSES: tuple[str, ...] = ("pass", "fail", "skip")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: `status` is pass, fail or skip; `detail` says why."""

    name: str
    status: Status
    detail: str = ""
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check {self.name!r}: status must be one of {STATUSES}, not {self.status!r}")


@dataclass
class Report:
    """Every check of one run against the service at `address` (`service` is its
    'name version' once Describe answered)."""

    address: str
    store_address: str
    service: str = ""
    checks: list[CheckResult] = field(default_factory=list)
    # The service's last log lines, when the suite started it itself and a check failed.
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        """True when no check failed (skipped checks do not fail a service)."""
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "fail"]

    def by_name(self) -> dict[str, CheckResult]:
        return {c.name: c for c in self.checks}

    def status_of(self, name: str) -> Status:
        """The status of the check called `name`; KeyError naming it when there is none."""
        try:
            return self.by_name()[name].status
        except KeyError:
            raise KeyError(f"no check named {name!r}; checks: {', '.join(c.name for c in self.checks)}") from None

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def summary(self) -> str:
        c = self.counts()
        verdict = "CONFORMS" if self.ok else "DOES NOT CONFORM"
        return f"{self.service or self.address}: {verdict} ({c['pass']} passed, {c['fail']} failed, {c['skip']} skipped)"

    def table(self):
        """A rich Table of the checks (rich is imported here only: the library stays light)."""
        from rich.table import Table

        colour = {"pass": "green", "fail": "red", "skip": "yellow"}
        table = Table(title=f"conformance of {self.service or 'the Repair service'} at {self.address} (store {self.store_address})")
        for column in ("check", "result", "seconds", "detail"):
            table.add_column(column, overflow="fold")
        for c in self.checks:
            table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", f"{c.seconds:.1f}", c.detail)
        return table
