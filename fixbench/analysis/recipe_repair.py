"""Study-level verdicts for training-recipe faults (Kim et al.), computed over every repeat
of a technique on a fault: the significance verdict "repaired", the improvement ratio IR,
patch complexity and patch similarity to the ground-truth fix. In the library so that the
orchestrator's report and the evaluator share them without importing each other."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from fixbench.analysis.errors import EmptyInputError, InvalidRecipeError, InvalidSettingError, LengthMismatchError


@dataclass(frozen=True)
class SignificanceResult:
    """The verdict of `repaired_by_significance` with the numbers behind it."""

    repaired: bool
    test: str
    statistic: float
    p_value: float
    mean_faulty: float
    mean_repaired: float
    alpha: float


def _as_sample(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise EmptyInputError(f"{name} holds no accuracies")
    if not np.all(np.isfinite(arr)):
        raise InvalidSettingError(f"{name} holds NaN or infinite accuracies")
    return arr


def repaired_by_significance(
    acc_faulty: Sequence[float],
    acc_repaired: Sequence[float],
    alpha: float = 0.05,
    paired: bool = False,
) -> SignificanceResult:
    """Kim et al.'s criterion: a fault is repaired when the repaired models' accuracies are
    significantly higher than the faulty ones' (one-sided test, p < alpha) *and* their mean
    is higher.

    Unpaired runs (independent trainings) use the Mann-Whitney U test with alternative
    "repaired > faulty". Paired runs (`paired=True`: run i of both used the same seed / data
    order) use the Wilcoxon signed-rank test on repaired − faulty; if every difference is
    zero there is no evidence of improvement and p is 1.
    """
    if not 0.0 < alpha < 1.0:
        raise InvalidSettingError(f"alpha must lie in (0, 1), got {alpha}")
    faulty = _as_sample(acc_faulty, "acc_faulty")
    repaired = _as_sample(acc_repaired, "acc_repaired")
    if paired:
        if faulty.size != repaired.size:
            raise LengthMismatchError(
                f"paired test needs equal run counts: acc_faulty={faulty.size}, acc_repaired={repaired.size}"
            )
        diff = repaired - faulty
        if np.all(diff == 0):
            test, statistic, p = "wilcoxon", 0.0, 1.0
        else:
            res = stats.wilcoxon(repaired, faulty, alternative="greater", zero_method="wilcox")
            test, statistic, p = "wilcoxon", float(res.statistic), float(res.pvalue)
    else:
        res = stats.mannwhitneyu(repaired, faulty, alternative="greater", method="auto")
        test, statistic, p = "mann-whitney-u", float(res.statistic), float(res.pvalue)
    mean_f, mean_r = float(faulty.mean()), float(repaired.mean())
    return SignificanceResult(
        repaired=bool(p < alpha and mean_r > mean_f),
        test=test,
        statistic=statistic,
        p_value=p,
        mean_faulty=mean_f,
        mean_repaired=mean_r,
        alpha=alpha,
    )


def improvement_ratio(
    acc_tool: float | Sequence[float],
    acc_faulty: float | Sequence[float],
    acc_groundtruth: float | Sequence[float],
    tolerance: float = 1e-12,
) -> float:
    """IR = (acc_tool − acc_faulty) / (acc_groundtruth − acc_faulty) (Kim et al.).

    Sequences are reduced to their mean first (IR compares the typical run of each). 1 means
    the tool matches the ground-truth fix, 0 no improvement, > 1 better than the fix,
    < 0 worse than the fault. When the ground-truth fix does not improve on the fault
    (denominator ≤ `tolerance`) there is no scale to measure against and IR is NaN: callers
    must report it as undefined rather than as a number.
    """

    def mean(v, name):
        arr = np.asarray(v, dtype=float).ravel()
        if arr.size == 0:
            raise EmptyInputError(f"{name} holds no accuracies")
        return float(arr.mean())

    tool, faulty, gt = (
        mean(acc_tool, "acc_tool"),
        mean(acc_faulty, "acc_faulty"),
        mean(acc_groundtruth, "acc_groundtruth"),
    )
    denominator = gt - faulty
    if denominator <= tolerance:
        return math.nan
    return (tool - faulty) / denominator


_REMOVED = "<removed>"


def _values_equal(a: Any, b: Any) -> bool:
    # Recipes round-trip through YAML/JSON, so 0.1 may come back as 0.1000000000000001.
    if (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _check_recipe(recipe: Mapping[str, Any], name: str) -> None:
    if not isinstance(recipe, Mapping):
        raise InvalidRecipeError(f"{name} must be a mapping of recipe fields to values, got {type(recipe).__name__}")
    for key in recipe:
        if not isinstance(key, str):
            raise InvalidRecipeError(f"{name} has a non-string field name {key!r}")


def recipe_patch(faulty_recipe: Mapping[str, Any], repaired_recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the repair changed, with their new values; a field the repair dropped maps
    to the marker "<removed>". Nested settings should be flattened to dotted names first
    (e.g. "layers.2.activation") so that each one counts as one field."""
    _check_recipe(faulty_recipe, "faulty_recipe")
    _check_recipe(repaired_recipe, "repaired_recipe")
    patch: dict[str, Any] = {}
    for key in sorted(set(faulty_recipe) | set(repaired_recipe)):
        if key not in repaired_recipe:
            patch[key] = _REMOVED
        elif key not in faulty_recipe or not _values_equal(faulty_recipe[key], repaired_recipe[key]):
            patch[key] = repaired_recipe[key]
    return patch


def patch_complexity(faulty_recipe: Mapping[str, Any], repaired_recipe: Mapping[str, Any]) -> int:
    """Number of recipe fields changed, added or removed by the repair (Kim et al.)."""
    return len(recipe_patch(faulty_recipe, repaired_recipe))


def patch_similarity(
    tool_patch: Mapping[str, Any] | Iterable[str],
    groundtruth_patch: Mapping[str, Any] | Iterable[str],
    match: str = "field",
) -> float:
    """Asymmetric Jaccard similarity of a tool's patch to the ground-truth fix (Kim et al.):

        sim(T, G) = |T ∩ G| / |G|

    where G is the set of changes of the ground-truth fix and T the set of changes of the
    tool's patch. Unlike the symmetric Jaccard |T ∩ G| / |T ∪ G| it does not penalise the
    tool for changing extra fields: it measures how much of the known fix the tool's patch
    contains (1 = every ground-truth change is present, 0 = none is). Search-based tools
    touch many fields at once, which the symmetric index would punish regardless of whether
    they found the fix.

    A change is a recipe field name when `match="field"` (the tool changed the faulty field,
    whatever value it chose — continuous fields such as the learning rate rarely hit the
    ground truth's exact value) and a (field, new value) pair when `match="value"`. Patches
    are mappings field → new value (see `recipe_patch`) or, for `match="field"`, iterables of
    field names. An empty ground-truth patch makes the index undefined: NaN.
    """
    if match not in ("field", "value"):
        raise InvalidSettingError(f"match must be 'field' or 'value', got {match!r}")

    def changes(patch, name):
        if isinstance(patch, Mapping):
            return {(k, None) if match == "field" else (k, repr(v)) for k, v in patch.items()}
        if match == "value":
            raise InvalidRecipeError(f"{name} must be a mapping field → new value when match='value'")
        if isinstance(patch, str):
            raise InvalidRecipeError(f"{name} must be a collection of field names, not one string")
        return {(str(k), None) for k in patch}

    tool, truth = (
        changes(tool_patch, "tool_patch"),
        changes(groundtruth_patch, "groundtruth_patch"),
    )
    if not truth:
        return math.nan
    return len(tool & truth) / len(truth)
