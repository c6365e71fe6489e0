"""One exception hierarchy; the CLI alone maps it to exit codes."""

from __future__ import annotations

from typing import Any


class JournalError(Exception):
    """Base of every error the journal raises on purpose."""

    exit_code = 4  # runtime failure


class ConfigError(JournalError):
    """The command or configuration is wrong; nothing was attempted."""

    exit_code = 2


class ValidationError(JournalError):
    """Input (a package, a target, an event) failed validation; nothing was written."""

    exit_code = 3


class PackageCorrupt(ValidationError):
    def __init__(self, package: str, member: str, expected: str, actual: str) -> None:
        self.package, self.member, self.expected, self.actual = package, member, expected, actual
        super().__init__(
            f"package {package}: member {member!r}: expected {expected}, found {actual}"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # raised in a worker process, read in its parent
        return type(self), (self.package, self.member, self.expected, self.actual)


class ChainBroken(ValidationError):
    """Packages do not form a continuous chain of positions."""


class SourceError(JournalError):
    """The source database refused or is misconfigured."""


class TransportError(JournalError):
    """The journal transport (Kafka or the file journal) failed."""


class RestoreError(JournalError):
    """A restore could not be planned or applied; the target was left unchanged."""


class RestoreRefused(RestoreError):
    """A restore that cannot be done exactly, refused before anything was written."""

    exit_code = 3


class StorageError(JournalError):
    """Writing a file failed (disk full, read-only file system, permission): the message
    names the path and the operating system's reason; what was half-written is removed."""

    def __init__(self, path: object, exc: OSError, doing: str = "write") -> None:
        self.path = str(path)
        self.reason = exc.strerror or str(exc) or type(exc).__name__
        super().__init__(f"cannot {doing} {self.path}: {self.reason}")


class UnencodableValue(ValidationError):
    """A captured value the journal cannot record exactly: capture stops rather than record
    another value (or retry what will fail again)."""

    def __init__(self, table: str, column: str, value: object, reason: str) -> None:
        self.table, self.column, self.value = table, column, value
        text = repr(value)
        if len(text) > 200:
            text = text[:197] + "..."
        super().__init__(
            f"table {table}, column {column}: value {text} cannot be captured exactly "
            f"({reason}); capture stopped before recording it: change or remove the value, "
            "or leave the table out of the publication")
