"""The fault benchmark: faulty models with their splits and ground truth."""

from fixbench.faults.bundle import Fault, FaultError
from fixbench.faults.suites import ensure_fault, ensure_suite, list_suites, suite_recipes

__all__ = ["Fault", "FaultError", "ensure_fault", "ensure_suite", "list_suites", "suite_recipes"]
