"""Exceptions that lcdb reports to the user as one clear line."""

from __future__ import annotations


class LcdbError(Exception):
    """Base of every error lcdb reports as one line and a non-zero exit."""


class StoreError(LcdbError):
    """The store is missing, not a store, locked, or of an unsupported schema version."""


class InputError(LcdbError):
    """An input file or value is invalid; the message names the file and the problem."""


class UsageError(LcdbError):
    """Arguments that do not fit together (exit code 2 from the CLI)."""
