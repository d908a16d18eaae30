"""Exceptions of the evaluator. Every one names the field, property or file at fault so that
the service can turn it into an INVALID_ARGUMENT status, or a note, without rewording it."""

from __future__ import annotations


class EvaluationError(ValueError):
    """Base class: the evaluation cannot be carried out as asked."""


class UnknownPropertyError(EvaluationError):
    """A requested property (e.g. "robustnes") is not one the evaluator knows."""


class LengthMismatchError(EvaluationError):
    """Arrays that must describe the same inputs (labels, predictions, groups) differ in length."""


class EmptyInputError(EvaluationError):
    """An array that must hold at least one value is empty."""


class MissingSensitiveAttributeError(EvaluationError):
    """Fairness was asked for a sensitive attribute the dataset does not declare."""


class FairnessUndefinedError(EvaluationError):
    """The split cannot support a fairness comparison (e.g. a single group)."""


class NotClassScoresError(EvaluationError):
    """A model's output is not a (batch, classes) score matrix."""


class InvalidSettingError(EvaluationError):
    """A property setting is out of range or of the wrong type; the message names the key."""


class InvalidRecipeError(EvaluationError):
    """A training recipe or patch is not a flat mapping of field names to values."""


def check_same_length(**arrays) -> int:
    """Returns the common length of the named arrays or raises LengthMismatchError naming them.

    Keyword names are used in the message, so callers pass e.g. ``y=y, pred_after=p``.
    """
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise LengthMismatchError(f"arrays must have equal length, got {described}")
    return next(iter(lengths.values())) if lengths else 0
