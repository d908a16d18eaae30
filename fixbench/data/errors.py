"""Errors raised by the dataset layer; each names the dataset, field, path or file at fault."""

from __future__ import annotations


class DatasetError(Exception):
    """Base class of every dataset-layer error."""


class UnknownDatasetError(DatasetError, KeyError):
    """A dataset name that is not registered; the message lists the known names."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = list(known)
        super().__init__(f"unknown dataset {name!r}; known datasets: {', '.join(self.known)}")

    def __str__(self) -> str:
        # KeyError's __str__ would quote the whole message; keep it readable.
        return str(self.args[0])


class DatasetPathError(DatasetError, FileNotFoundError):
    """A dataset that needs files on disk was given no path, or a path without its layout."""


class DatasetFormatError(DatasetError, ValueError):
    """A file that exists but is not in the format the loader expects; names the file."""


class DatasetBuildError(DatasetError, RuntimeError):
    """A builder returned splits that break the declared spec (shape, dtype, labels, groups)."""
