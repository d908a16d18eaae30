"""The shared conformance suite: does a running Repair service keep the contract?

    from fixbench.conformance import run_conformance, run_service_conformance
    report = run_conformance("127.0.0.1:50061", store_address="127.0.0.1:50051")
    report = run_service_conformance("services/noop")   # starts a store and the service
    print(report.summary()); report.ok

The checks (Describe, health, reflection, Check, Fix streaming, idempotency, cancellation,
budget, bad inputs) are in `fixbench.conformance.suite`; the fixture fault they upload is
in `fixbench.conformance.fixture`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fixbench.conformance.fixture import Fixture, FixtureError, build_fixture
from fixbench.conformance.launch import LaunchError, ServiceProcess, start_store
from fixbench.conformance.report import CheckResult, Report
from fixbench.conformance.suite import ConformanceSuite, SuiteSettings, SuiteUsageError

__all__ = [
    "CheckResult", "ConformanceSuite", "Fixture", "FixtureError", "LaunchError", "Report", "ServiceProcess",
    "SuiteSettings", "SuiteUsageError", "build_fixture", "run_conformance", "run_service_conformance", "start_store",
]


def run_conformance(address: str, store_address: str | None = None, params: dict[str, Any] | None = None,
                    settings: SuiteSettings | None = None, run_id: str | None = None) -> Report:
    """Checks the Repair service at `address` against the contract.

    `store_address` must be the artifact store the service reads from (the fixture is
    uploaded there). Without one, an in-process store is started for the fixture; the checks
    that need the service to read it are then skipped, saying so, unless the service happens
    to use that store. `params` are passed to the approach in every Fix."""
    if store_address:
        return ConformanceSuite(address, store_address, params, settings, run_id).run()
    with tempfile.TemporaryDirectory(prefix="fixbench-conformance-store-") as tmp:
        store = start_store(Path(tmp) / "store")
        try:
            return ConformanceSuite(address, store.address, params, settings, run_id, suite_owned_store=True).run()
        finally:
            store.stop(0)


def run_service_conformance(service_dir: str | Path, params: dict[str, Any] | None = None,
                            settings: SuiteSettings | None = None, threads: int = 1,
                            start_timeout: float = 120.0) -> Report:
    """Starts an in-process store and `service_dir/approach.py` as a local process pointed at
    it, runs the suite, and stops both. LaunchError (with the service's log) when it does
    not start."""
    service_dir = Path(service_dir)
    with tempfile.TemporaryDirectory(prefix="fixbench-conformance-") as tmp:
        store = start_store(Path(tmp) / "store")
        try:
            with ServiceProcess(service_dir, store.address, Path(tmp) / "service", threads=threads,
                                start_timeout=start_timeout) as service:
                report = ConformanceSuite(service.address, store.address, params, settings).run()
                if not report.ok:
                    report.log_tail = service.log_tail()
                return report
        finally:
            store.stop(0)
