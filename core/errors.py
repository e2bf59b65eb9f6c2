"""The one error hierarchy of the core.

Every front end (CLI, dashboard, HTTP trigger) catches :class:`RetentionError` at its
edge and turns it into an exit code, an ``st.error`` or an HTTP status. Anything else
that escapes is a bug and may show its traceback.
"""

from __future__ import annotations


class RetentionError(Exception):
    """Base of every expected failure. ``exit_code`` follows SPEC.md."""

    exit_code = 1

    def one_line(self) -> str:
        """The message on a single line, for stderr, logs and the history table."""
        return " ".join(str(self).split())


class BadSetting(RetentionError):
    """A setting or argument is invalid; nothing was read or written."""

    exit_code = 2

    def __init__(self, name: str, value: object, why: str) -> None:
        self.name, self.value, self.why = name, value, why
        shown = "" if value is None else f" = {value!r}"
        super().__init__(f"{name}{shown}: {why}")


class DatabaseUnavailable(RetentionError):
    """The database cannot be reached (treated as configuration: exit 2)."""

    exit_code = 2

    def __init__(self, url_masked: str, why: str) -> None:
        self.url_masked, self.why = url_masked, why
        super().__init__(f"DATABASE_URL = {url_masked}: cannot connect: {why}")


class LockHeld(RetentionError):
    """Another cleanup of the same table is running; nothing was changed."""

    exit_code = 3

    def __init__(self, table: str) -> None:
        self.table = table
        super().__init__(f"another cleanup of {table} is running; nothing was changed")


class CleanupFailed(RetentionError):
    """A cleanup stopped. Rows already deleted are in a backup that verifies."""

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        self.run_id = run_id
        super().__init__(message)


class BackupMismatch(RetentionError):
    """A backup file does not match its manifest."""

    def __init__(self, path: str, what: str, expected: object, actual: object) -> None:
        self.path, self.what, self.expected, self.actual = path, what, expected, actual
        super().__init__(f"{path}: {what} is {actual}, manifest says {expected}")


class BackupNotFound(RetentionError):
    """A backup name does not resolve to a file inside BACKUP_DIR (exit 2)."""

    exit_code = 2

    def __init__(self, name: str, why: str) -> None:
        self.name, self.why = name, why
        super().__init__(f"backup {name!r}: {why}")


class RestoreError(RetentionError):
    """A restore was refused or failed; the table is unchanged."""
