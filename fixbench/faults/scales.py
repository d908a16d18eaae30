"""The scale knob of a fault build: how much data, and how many training repeats for the
statistical killing of training-recipe faults.

A scale is a positive float (fraction of each dataset; stand-ins may exceed 1) or one of the
named scales below. Repeats grow with scale: the smallest count with which the exact
Mann-Whitney test can reach p < 0.05 at small scale, 10 (Kim et al.'s count) at full scale.
"""

from __future__ import annotations

NAMED_SCALES: dict[str, float] = {
    "tiny": 0.1,
    "small": 0.2,
    "medium": 0.5,
    "full": 1.0,
}


def parse_scale(value: str | float | int) -> float:
    """A scale from a number or a name ("small", "full", ...); bad values raise ValueError
    naming the field and the allowed names."""
    if isinstance(value, bool):
        raise ValueError(f"scale: expected a positive number or one of {sorted(NAMED_SCALES)}, got {value!r}")
    if isinstance(value, str):
        key = value.strip().lower()
        if key in NAMED_SCALES:
            return NAMED_SCALES[key]
        try:
            number = float(key)
        except ValueError:
            raise ValueError(
                f"scale: {value!r} is neither a number nor a named scale ({', '.join(sorted(NAMED_SCALES))})"
            ) from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise ValueError(f"scale: expected a positive number or a name, got {type(value).__name__}")
    if not number > 0 or number != number or number == float("inf"):
        raise ValueError(f"scale: must be a positive finite number, got {value!r}")
    return number


def repeats_for_scale(scale: float) -> int:
    """Training repeats per recipe (original and mutant each) at this scale."""
    from fixbench.faults.killing import ALPHA, min_repeats  # scipy.stats: only where repeats are asked for

    if scale <= 0.25:
        return min_repeats(ALPHA)
    if scale < 1.0:
        return 6
    return 10
