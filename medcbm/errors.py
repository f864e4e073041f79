"""Exception types. Every user-facing failure is a :class:`MedcbmError` whose message says what to fix."""

from __future__ import annotations


class MedcbmError(Exception):
    """Base class for errors that the CLI prints as a one-line message (no traceback)."""


class ConfigError(MedcbmError):
    """A configuration file or option is invalid; the message names the key."""


class DataError(MedcbmError):
    """Bad input data; the message names the file and, where known, the manifest row and field."""

    def __init__(self, message: str, *, path: str | None = None, row: int | None = None, field: str | None = None):
        parts = []
        if path is not None:
            parts.append(f"file {path}")
        if row is not None:
            parts.append(f"manifest row {row}")
        if field is not None:
            parts.append(f"field '{field}'")
        where = f" [{', '.join(parts)}]" if parts else ""
        super().__init__(f"{message}{where}")
        self.message, self.path, self.row, self.field = message, path, row, field


class MissingWeightsError(MedcbmError):
    """Backbone or embedder weights are not available offline; the message names the file or package."""


class RegistryError(MedcbmError, KeyError):
    """Unknown name in a registry; the message lists the available names."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""
