"""The one class an approach author writes (after scikit-learn's estimator API: parameters
are declared once; Describe, the CLI help and the README table come from that declaration)."""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from fixbench.v1 import repair_pb2

if TYPE_CHECKING:
    from fixbench.sdk.context import RepairContext
    from fixbench.sdk.outcome import Outcome

_LEVELS = {
    "baseline": repair_pb2.REPAIR_LEVEL_BASELINE,
    "model": repair_pb2.REPAIR_LEVEL_MODEL,
    "layer": repair_pb2.REPAIR_LEVEL_LAYER,
    "neuron": repair_pb2.REPAIR_LEVEL_NEURON,
    "recipe": repair_pb2.REPAIR_LEVEL_RECIPE,
}
NEEDS = {
    "training_data": repair_pb2.NEED_TRAINING_DATA,
    "validation_data": repair_pb2.NEED_VALIDATION_DATA,
    "repair_data": repair_pb2.NEED_REPAIR_DATA,
    "training_recipe": repair_pb2.NEED_TRAINING_RECIPE,
    "sensitive_attribute": repair_pb2.NEED_SENSITIVE_ATTRIBUTE,
}
FAULT_FAMILIES = ("misclassification", "training_recipe")
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


class ParamError(ValueError):
    """A parameter that the approach does not declare, or a value of the wrong type."""


@dataclass(frozen=True)
class Param:
    """One declared parameter: name, type (int, float, str, bool), default, one line of help."""

    name: str
    type: type
    default: Any
    help: str = ""

    def coerce(self, value: Any) -> Any:
        if self.type is bool:
            if isinstance(value, bool):
                return value
            raise ParamError(f"parameter {self.name!r} must be true or false, not {value!r}")
        if self.type is int:
            # A string ("eight", even "8") is a mistake in the spec, not something to parse.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
                raise ParamError(f"parameter {self.name!r} must be an integer, not {value!r}")
            return int(value)
        if self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParamError(f"parameter {self.name!r} must be a number, not {value!r}")
            return float(value)
        if not isinstance(value, str):
            raise ParamError(f"parameter {self.name!r} must be a string, not {value!r}")
        return value

    def to_proto(self) -> repair_pb2.ParameterSpec:
        return repair_pb2.ParameterSpec(
            name=self.name, type=self.type.__name__, default_json=json.dumps(self.default), help=self.help
        )


class Approach(abc.ABC):
    """Subclass this: set the class attributes, declare `params`, implement `repair`.

    - `check(ctx)` (optional) returns a reason string when the job is not adaptable (cheaply:
      no training), else None. The SDK already checks the declared `needs`.
    - `repair(ctx)` does the work and returns an Outcome; raise `Unadaptable(reason)` when it
      finds out late that it cannot apply. Call `ctx.check()` or `ctx.should_stop()` in loops
      so budgets and cancellation take effect.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"
    level: ClassVar[str] = "baseline"
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ("repair_data",)
    params: ClassVar[tuple[Param, ...]] = ()
    fault_families: ClassVar[tuple[str, ...]] = ("misclassification", "training_recipe")
    uses_torch: ClassVar[bool] = True

    def check(self, ctx: RepairContext) -> str | None:
        return None

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> None:
        """Override to check parameter values beyond their types; raise ParamError (or
        ValueError) naming the parameter. The caller then gets INVALID_ARGUMENT."""
        return None

    @abc.abstractmethod
    def repair(self, ctx: RepairContext) -> Outcome:
        """Does the work; returns an Outcome (see the class docstring)."""

    @classmethod
    def resolve_params(cls, given: dict[str, Any]) -> dict[str, Any]:
        """Declared defaults overlaid with `given`; unknown names and wrong types are errors."""
        declared = {p.name: p for p in cls.params}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise ParamError(
                f"{cls.name} has no parameter(s) {', '.join(unknown)}; it declares: {', '.join(declared) or 'none'}"
            )
        values = {p.name: p.default for p in cls.params}
        for key, value in given.items():
            values[key] = declared[key].coerce(value)
        try:
            cls.validate_params(values)
        except ParamError:
            raise
        except ValueError as exc:
            raise ParamError(str(exc)) from exc
        return values

    @classmethod
    def validate_declaration(cls) -> None:
        if not cls.name:
            raise TypeError(f"{cls.__name__} must set a name")
        if cls.level not in _LEVELS:
            raise TypeError(f"{cls.__name__}.level must be one of {sorted(_LEVELS)}")
        unknown_families = [f for f in cls.fault_families if f not in FAULT_FAMILIES]
        if unknown_families or not cls.fault_families:
            raise TypeError(f"{cls.__name__}.fault_families must be a non-empty subset of {FAULT_FAMILIES}")
        bad = [n for n in cls.needs if n not in NEEDS]
        if bad:
            raise TypeError(f"{cls.__name__}.needs has unknown entries {bad}; known: {sorted(NEEDS)}")
        for p in cls.params:
            if p.type not in _TYPES.values():
                raise TypeError(f"parameter {p.name} has unsupported type {p.type}")
            p.coerce(p.default)

    @classmethod
    def level_proto(cls) -> int:
        return _LEVELS[cls.level]

    @classmethod
    def parameter_table(cls) -> str:
        """Markdown table of the parameters, for the service README."""
        rows = ["| parameter | type | default | help |", "|---|---|---|---|"]
        rows += [f"| `{p.name}` | {p.type.__name__} | `{json.dumps(p.default)}` | {p.help} |" for p in cls.params]
        return "\n".join(rows)
