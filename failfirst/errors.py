"""The errors users see: one family, each naming what was expected and what was found."""

from __future__ import annotations


class FailFirstError(Exception):
    """Base of every error failfirst raises on purpose; the CLI prints it as one line."""

    exit_code = 1


class InputError(FailFirstError, ValueError):
    """Bad input from the user (data, names, options); refused before any work."""

    exit_code = 2


class ModelError(InputError):
    """A model that cannot be loaded or whose outputs do not fit the contract."""


class DataError(InputError):
    """A dataset that cannot be loaded or holds values the sweep cannot use."""


class StoreError(FailFirstError):
    """A run store that cannot be created, resumed or read; refused before any work."""

    exit_code = 2


class SweepError(FailFirstError):
    """A failure while the sweep ran; what was already written stays."""


def unknown_name(kind: str, name: str, choices) -> InputError:
    """An error for an unknown name that lists the valid choices."""
    return InputError(f"unknown {kind} {name!r}; expected one of: {', '.join(sorted(choices))}")
