"""The one vocabulary of job outcomes: the contract's RepairStatus names without their enum
prefix, which of them carry a model that is scored, and the labels the papers' tables show
for the rest (UNAD, CORR, FAIL)."""

from __future__ import annotations

import math

from fixbench.v1 import repair_pb2

# Every outcome, as the ledger stores it: REPAIRED, NOT_REPAIRED, UNADAPTABLE, …
STATUSES = tuple(n.removeprefix("REPAIR_STATUS_") for n in repair_pb2.RepairStatus.keys() if not n.endswith("UNSPECIFIED"))
# Outcomes whose model is evaluated: the approach ran and handed back a model (or none).
SCORED = ("REPAIRED", "NOT_REPAIRED")
# What a table cell shows for an outcome that is not scored (You et al.'s labels).
TABLE_LABELS = {"UNADAPTABLE": "UNAD", "CORRUPTED_OUTPUT": "CORR", "CORRUPTED": "CORR"}
FAILURE_LABEL = "FAIL"  # TOOL_ERROR, TIMEOUT, OOM, INFRA_ERROR, CANCELLED, …
# The order in which labels win a tie: the most specific first.
LABEL_ORDER = ("UNAD", "CORR", FAILURE_LABEL)


def normalise(value) -> str:
    """'REPAIR_STATUS_REPAIRED' / 'repaired' / None -> 'REPAIRED' / 'REPAIRED' / ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    s = str(value).upper()
    for prefix in ("REPAIR_STATUS_", "EVALUATION_STATUS_"):
        s = s.removeprefix(prefix)
    return s


def table_label(status: str) -> str:
    """UNAD, CORR or FAIL for an outcome that is not scored."""
    return TABLE_LABELS.get(normalise(status), FAILURE_LABEL)
