"""The fault benchmark: faulty models with their splits and ground truth.

Misclassification faults (You et al.) and training-recipe faults (Kim et al.: DeepCrime
mutants kept when statistically killed, DeepFD real-fault analogues), grouped into suites,
built into a content-addressed cache with a manifest per built suite.
"""

from fixbench.faults.bundle import Fault, FaultError
from fixbench.faults.errors import (
    MutantNotKilled,
    OperatorNotApplicable,
    SuiteBuildError,
    UnknownFaultError,
    UnknownOperatorError,
    UnknownSuiteError,
)
from fixbench.faults.fault_spec import FaultRecipe
from fixbench.faults.scales import NAMED_SCALES, parse_scale, repeats_for_scale
from fixbench.faults.suites import ensure_fault, ensure_suite, find_recipe, list_suites, suite_recipes

_LAZY = {"OPERATORS", "apply_operator", "get_operator"}


def __getattr__(name: str):
    # The mutation operators import torch; a study that only finds its cached faults needs none.
    if name in _LAZY:
        from fixbench.faults import operators

        return getattr(operators, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "NAMED_SCALES",
    "OPERATORS",
    "Fault",
    "FaultError",
    "FaultRecipe",
    "MutantNotKilled",
    "OperatorNotApplicable",
    "SuiteBuildError",
    "UnknownFaultError",
    "UnknownOperatorError",
    "UnknownSuiteError",
    "apply_operator",
    "ensure_fault",
    "ensure_suite",
    "find_recipe",
    "get_operator",
    "list_suites",
    "parse_scale",
    "repeats_for_scale",
    "suite_recipes",
]
