"""Errors of the fault benchmark; each message names the suite, fault, operator or field at fault."""

from __future__ import annotations

from fixbench.faults.bundle import FaultError


class UnknownSuiteError(KeyError):
    """A suite name that no suite has."""

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownFaultError(KeyError):
    """A fault id that no suite (or no built benchmark) has."""

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownOperatorError(KeyError):
    """An operator name outside the catalogue."""

    def __str__(self) -> str:
        return str(self.args[0])


class OperatorNotApplicable(ValueError):
    """A mutation operator that cannot change this recipe (the message says why)."""

    def __init__(self, operator: str, reason: str):
        super().__init__(f"operator {operator} does not apply: {reason}")
        self.operator = operator
        self.reason = reason


class MutantNotKilled(FaultError):
    """No candidate mutation of a training-recipe fault was statistically worse than the
    original recipe, so there is no fault to keep (DeepCrime discards such mutants)."""


class SuiteBuildError(FaultError):
    """Some faults of a suite could not be built; `failures` holds (fault id, exception)."""

    def __init__(self, message: str, failures: list[tuple[str, Exception]]):
        super().__init__(message)
        self.failures = failures


__all__ = [
    "SuiteBuildError",
    "FaultError",
    "MutantNotKilled",
    "OperatorNotApplicable",
    "UnknownFaultError",
    "UnknownOperatorError",
    "UnknownSuiteError",
]
