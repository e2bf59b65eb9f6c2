"""The one error hierarchy of the core, and the one place foreign errors are translated.

Every front end (CLI, dashboard, HTTP trigger) catches :class:`RetentionError` at its
edge and turns it into an exit code, an ``st.error`` or an HTTP status. Anything else
that escapes is a bug and may show its traceback.

Driver and file-system errors (SQLAlchemy, psycopg2, sqlite3, OSError) are translated
into :class:`DatabaseError` / :class:`StorageError` by :func:`map_exceptions`, from the
table :data:`FOREIGN_ERRORS`, so the rest of the core catches only its own vocabulary.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy.exc import SQLAlchemyError

from .i18n import N_
from .masking import redact


@dataclass(frozen=True)
class Msg:
    """A piece of an error message: an English template (a catalog message id) and its named parameters.

    A parameter may itself be a :class:`Msg` (a setting's reason inside "NAME = value: reason").
    Without parameters the template is used as it is (it may then hold braces).
    """

    template: str
    params: Mapping[str, object] = field(default_factory=dict)

    def render(self, translate: Callable[[str], str] = str) -> str:
        """The text, each template passed through ``translate`` first (``str``: English)."""
        text = translate(self.template)
        if not self.params:
            return text
        return text.format(**{k: v.render(translate) if isinstance(v, Msg) else v for k, v in self.params.items()})


class RetentionError(Exception):
    """Base of every expected failure. ``exit_code``: 1 failed, 2 usage/configuration, 3 locked.

    The message is a template with named parameters (:class:`Msg`): ``str(exc)`` and
    :meth:`one_line` are English (logs, history rows, JSON and HTTP bodies); :meth:`localized`
    is the same line in the active language, for what a person reads (CLI human output, pages).
    """

    exit_code = 1

    def __init__(self, template: str = "", /, **params: object) -> None:
        self.msg = Msg(template, params)
        super().__init__(self.msg.render())

    def one_line(self) -> str:
        """The message on a single line, in English, secrets redacted: stderr under --json, logs, HTTP bodies,
        the history table."""
        return redact(" ".join(str(self).split()))

    def localized(self) -> str:
        """:meth:`one_line` in the active language (core.i18n), for the CLI's human output and the dashboard."""
        from .i18n import _

        return redact(" ".join(self.msg.render(_).split()))

    def _reword(self, template: str, **params: object) -> None:
        """Replace the message (a subclass that words its parent's data differently)."""
        self.msg = Msg(template, params)
        self.args = (self.msg.render(),)


class BadSetting(RetentionError):
    """A setting or argument is invalid; nothing was read or written.

    ``why`` is an English template (marked with ``N_`` where it is common, so it has a
    translation) and ``params`` its parameters; :meth:`reason` is it in the active language,
    for a page that shows it beside the field the value was typed into.
    """

    exit_code = 2

    def __init__(self, name: str, value: object, why: str, **params: object) -> None:
        self.name, self.value, self.why_msg = name, value, Msg(why, params)
        self.why = self.why_msg.render()
        shown = "" if value is None else f" = {value!r}"
        super().__init__("{name}{shown}: {why}", name=name, shown=shown, why=self.why_msg)

    def reason(self) -> str:
        """What is wrong with the value, without the setting's name, in the active language."""
        from .i18n import _

        return self.why_msg.render(_)


class DatabaseUnavailable(RetentionError):
    """The database cannot be reached (treated as configuration: exit 2)."""

    exit_code = 2

    def __init__(self, url_masked: str, why: str, **params: object) -> None:
        self.url_masked, self.why = url_masked, Msg(why, params).render()
        super().__init__(N_("DATABASE_URL = {url}: cannot connect: {why}"), url=url_masked, why=Msg(why, params))


class LockHeld(RetentionError):
    """Another cleanup of the same table is running; nothing was changed."""

    exit_code = 3

    def __init__(self, table: str) -> None:
        self.table = table
        super().__init__(N_("another cleanup of {table} is running; nothing was changed"), table=table)


class DependentRowsRefused(RetentionError):
    """Deleting log rows would change rows of other tables (foreign keys, delete triggers); nothing was written."""

    exit_code = 2

    def __init__(self, table: str, why: str) -> None:
        self.table, self.why = table, why
        super().__init__(N_("cleanup of {table} refused: {why}"), table=table, why=Msg(why))


class CleanupFailed(RetentionError):
    """A cleanup stopped. Rows already deleted are in a backup that verifies."""

    def __init__(self, template: str, *, run_id: str | None = None, **params: object) -> None:
        self.run_id = run_id
        super().__init__(template, **params)


class DatabaseError(RetentionError):
    """A database statement failed (translated from the driver's error by :func:`map_exceptions`)."""


class LockTimeout(DatabaseError):
    """A statement waited for a lock another session holds longer than allowed (PostgreSQL
    ``lock_timeout``, SQLite's busy timeout: ``CLEANUP_LOCK_TIMEOUT_MS``); the statement changed nothing.

    ``changed_nothing``: raised before the operation changed anything at all (its message says so).
    """

    def __init__(self, template: str, /, *, changed_nothing: bool = False, **params: object) -> None:
        self.changed_nothing = changed_nothing
        super().__init__(template, **params)


class StorageError(RetentionError):
    """Reading or writing a file failed: disk full, permissions, a vanished folder."""


class BackupWriteError(RetentionError):
    """A gzip member did not read back as the batch's records; nothing of it was made durable."""


class BackupReadError(RetentionError, ValueError):
    """A backup file does not read back: not gzip, cut short, not UTF-8, or a CSV record cut off.

    Also a ValueError, as the parsers of the standard library raise."""


class BatchError(RetentionError):
    """A batch stopped and was rolled back (its counts disagreed, or its journal row changed)."""


class BatchConflict(BatchError):
    """A batch met a concurrent change; it was rolled back and may be retried."""


class BackupMismatch(RetentionError):
    """A backup file does not match its manifest (or the journal of the run that wrote it)."""

    def __init__(self, path: str, what: str, expected: object, actual: object) -> None:
        self.path, self.what, self.expected, self.actual = path, what, expected, actual
        super().__init__(N_("{path}: {what} is {actual}, manifest says {expected}"), path=path, what=Msg(what),
                         actual=_as_msg(actual), expected=_as_msg(expected))

    @property
    def problem(self) -> str:
        """What is wrong, without the path (``verify`` shows it beside the file)."""
        if self.what == "the file":
            return str(self.actual)
        if self.what == "sha256":
            return "sha256 differs from the manifest"
        if self.what == "row count":
            return f"{self.actual} rows in the file, manifest says {self.expected}"
        return f"{self.what} is {self.actual}, expected {self.expected}"


# The parts of BackupMismatch messages that are words, not values: translated when shown.
_WORDS = (N_("the file"), N_("the backup file"), N_("the backup"), N_("the manifest"), N_("row count"),
          N_("length"), N_("complete"), N_("present"), N_("missing"), N_("a regular file"), N_("a symbolic link"),
          N_("matching its manifest"), N_("valid JSON"), N_("a valid manifest"))


def _as_msg(value: object) -> object:
    """A word of :data:`_WORDS` as a translatable Msg; any other value as it is."""
    return Msg(value) if isinstance(value, str) and value in _WORDS else value


class BadManifest(BackupMismatch):
    """A manifest is unreadable or malformed (a bad field, not JSON, a symbolic link, too large)."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(path, "the manifest", "a valid manifest", why)
        self.why = why
        self._reword(N_("{path}: manifest refused: {why}"), path=path, why=Msg(why))

    @property
    def problem(self) -> str:
        return f"manifest refused: {self.why}"


class BackupNotFound(RetentionError):
    """A backup name does not resolve to a file inside BACKUP_DIR (exit 2)."""

    exit_code = 2

    def __init__(self, name: str, why: str, **params: object) -> None:
        self.name, self.why = name, Msg(why, params).render()
        super().__init__(N_("backup {name}: {why}"), name=repr(name), why=Msg(why, params))


class RestoreError(RetentionError):
    """A restore was refused or failed; the table is unchanged."""


class OtherSource(RestoreError):
    """A backup of another database or table (its manifest's ``source``): refused, exit 2, unless forced."""

    exit_code = 2


class PermissionDenied(RetentionError):
    """The database role lacks a privilege the operation needs (exit 2: a configuration matter)."""

    exit_code = 2


def _privilege_errors() -> tuple[type[BaseException], ...]:
    try:
        from psycopg2 import errors as pg_errors
    except ImportError:  # a SQLite-only install
        return ()
    return (pg_errors.InsufficientPrivilege,)


class BackupTooLarge(BackupReadError):
    """A backup file goes over a reading limit (decompressed size, record length, gzip members)."""


def _driver_errors() -> tuple[type[BaseException], ...]:
    try:
        import psycopg2
    except ImportError:  # a SQLite-only install
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg2.Error)


# How a translated foreign error reads ("{error}": the driver's or the OS's own words, untranslated).
_FOREIGN_TEMPLATE = {StorageError: N_("cannot read or write a file: {error}"),
                     DatabaseError: N_("database error: {error}")}

# Foreign class -> own class, first match wins. The one table of its kind in the core.
FOREIGN_ERRORS: tuple[tuple[tuple[type[BaseException], ...], type[RetentionError]], ...] = (
    (_privilege_errors(), PermissionDenied),
    ((SQLAlchemyError, *_driver_errors()), DatabaseError),
    ((OSError,), StorageError),
)


def describe(exc: BaseException) -> str:
    """``Type: message`` on one line (the driver's own message for SQLAlchemy errors)."""
    text = redact(" ".join(str(getattr(exc, "orig", None) or exc).split()))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _lock_wait_errors() -> tuple[type[BaseException], ...]:
    try:
        from psycopg2 import errors as pg_errors
    except ImportError:  # a SQLite-only install
        return ()
    return (pg_errors.LockNotAvailable,)


def waited_too_long(exc: BaseException | None) -> bool:
    """Whether a driver error is a lock wait that ran out: PostgreSQL ``lock_timeout`` (LockNotAvailable),
    SQLite's busy timeout (SQLITE_BUSY / SQLITE_LOCKED, which carry no class of their own)."""
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return isinstance(exc, _lock_wait_errors())


def translate(exc: BaseException) -> RetentionError | None:
    """The own error for a foreign one (message: :func:`describe`), or None if it is not in the table."""
    if isinstance(exc, RetentionError):
        return exc
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    if waited_too_long(exc) or waited_too_long(orig):  # before FOREIGN_ERRORS: a DatabaseError of its own
        return LockTimeout(_FOREIGN_TEMPLATE[DatabaseError], error=describe(exc))
    for foreign, own in FOREIGN_ERRORS:
        if isinstance(exc, foreign) or isinstance(orig, foreign):
            return own(_FOREIGN_TEMPLATE.get(own, "{error}"), error=describe(exc))
    return None


@contextmanager
def map_exceptions() -> Iterator[None]:
    """Re-raise the foreign errors of :data:`FOREIGN_ERRORS` as the project's own (``from`` the original)."""
    try:
        yield
    except RetentionError:
        raise
    except Exception as exc:
        own = translate(exc)
        if own is None:
            raise
        raise own from exc
