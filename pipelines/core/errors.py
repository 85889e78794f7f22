"""The errors the command line turns into exit statuses.

`UsageError` and its subclasses mean the user asked for something that cannot be done as asked
(exit 2, one line naming the fix); they are raised before any work starts. Anything else raised
by a stage is a job failure (exit 1).
"""
from __future__ import annotations


class UsageError(ValueError):
    """Bad arguments: not a run directory, an earlier stage missing, an unknown entity or key, ..."""


class ConfigError(UsageError):
    """A config value is missing, unknown or impossible; the message names the key."""


class InvalidInputError(RuntimeError):
    """The input has no usable rows, or more invalid rows than `input.max_invalid_fraction` allows."""
