"""One exception base for everything a user can cause or fix.

The CLI prints ``FieldearError`` as one line on stderr (message, then hint) and exits non-zero;
the traceback only goes to debug logging.
"""

from __future__ import annotations


class FieldearError(Exception):
    """An error with a message for the user and an optional hint saying what to do."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class AudioError(FieldearError):
    """A recording cannot be read or decoded."""


class BundleError(FieldearError):
    """A model bundle is missing, corrupt or inconsistent."""


class ConfigError(FieldearError):
    """A configuration file or option is invalid."""


class DatasetError(FieldearError):
    """A training dataset is unusable."""
