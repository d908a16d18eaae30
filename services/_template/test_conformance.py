"""__NAME__ keeps the Repair contract: the shared conformance suite against this folder's
service, started as a local process with its own artifact store.

    .venv/bin/pytest services/__NAME__ -q
"""

from pathlib import Path

from fixbench.conformance import run_service_conformance

SERVICE_DIR = Path(__file__).resolve().parent


def test_service_passes_the_conformance_suite():
    report = run_service_conformance(SERVICE_DIR)
    failures = "\n".join(f"{c.name}: {c.detail}" for c in report.failures)
    assert report.ok, f"{report.summary()}\n{failures}\n--- service log ---\n{report.log_tail}"
