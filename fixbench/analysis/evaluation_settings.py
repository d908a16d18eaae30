"""What the evaluator can measure and which settings it takes: the property names and the
settings schema, and the two checks on them. In the library so that the orchestrator checks a
study spec by the evaluator's own rules before any job runs (it talks to the evaluator only
through the contract); the evaluator imports them from here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fixbench.analysis.errors import InvalidSettingError, UnknownPropertyError

KNOWN_PROPERTIES = ("accuracy", "compatibility", "change", "robustness", "fairness")
# Robustness and fairness cost attacks or need an attribute, so they run when asked for.
DEFAULT_PROPERTIES = ("accuracy", "compatibility", "change")
SETTING_SECTIONS = KNOWN_PROPERTIES + ("parity", "integrity")

_SETTING_KEYS: dict[str, dict[str, type | tuple]] = {
    "robustness": {
        "eps": (int, float),
        "samples": int,
        "steps": int,
        "rel_stepsize": (int, float),
        "abs_stepsize": (int, float),
        "random_start": bool,
        "bounds": (list, tuple, type(None)),
        "attack": str,
        "output_kind": str,
        "batch_size": int,
        # Test indices to attack, common to every model compared in a study (You et al.);
        # without it the evaluator draws `samples` inputs both of its two models get right.
        "indices": (list, tuple),
    },
    "parity": {
        "min_agreement": (int, float),
        "max_abs_diff": (int, float),
        "samples": int,
    },
    "integrity": {"relative_floor": (int, float), "absolute_floor": (int, float)},
    "change": {"atol": (int, float)},
    "accuracy": {},
    "compatibility": {},
    "fairness": {},
}


def resolve_properties(requested: Sequence[str]) -> list[str]:
    """The properties to compute, in canonical order; empty → DEFAULT_PROPERTIES."""
    wanted = [p.strip().lower() for p in requested if p.strip()]
    unknown = sorted(set(wanted) - set(KNOWN_PROPERTIES))
    if unknown:
        raise UnknownPropertyError(
            f"unknown property {', '.join(map(repr, unknown))}; known: {', '.join(KNOWN_PROPERTIES)}"
        )
    chosen = set(wanted) if wanted else set(DEFAULT_PROPERTIES)
    return [p for p in KNOWN_PROPERTIES if p in chosen]


def check_settings(settings: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Validates {section: {key: value}} and returns a copy; names the bad section or key."""
    settings = dict(settings or {})
    out: dict[str, dict[str, Any]] = {}
    for section, values in settings.items():
        if section not in _SETTING_KEYS:
            raise UnknownPropertyError(
                f"settings name unknown section {section!r}; known: {', '.join(SETTING_SECTIONS)}"
            )
        if not isinstance(values, Mapping):
            raise InvalidSettingError(f"settings.{section} must be a mapping, got {type(values).__name__}")
        allowed = _SETTING_KEYS[section]
        for key, value in values.items():
            if key not in allowed:
                raise InvalidSettingError(f"settings.{section}.{key} is not a setting; known: {sorted(allowed)}")
            kinds = allowed[key]
            # Struct carries every number as a float: accept integral floats for int keys.
            if kinds is int and isinstance(value, float) and value.is_integer():
                value = int(value)
            kind_tuple = kinds if isinstance(kinds, tuple) else (kinds,)
            # bool is an int subclass; a flag where a number belongs is a mistake, not 0 / 1.
            if isinstance(value, bool) and bool not in kind_tuple:
                raise InvalidSettingError(f"settings.{section}.{key} must be a number, got a boolean")
            if not isinstance(value, kinds):
                raise InvalidSettingError(f"settings.{section}.{key} has type {type(value).__name__}")
            out.setdefault(section, {})[key] = value
    return out


__all__ = ["DEFAULT_PROPERTIES", "KNOWN_PROPERTIES", "SETTING_SECTIONS", "check_settings", "resolve_properties"]
