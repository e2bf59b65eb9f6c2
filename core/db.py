"""Engine, table introspection, identifier quoting and the cross-process cleanup lock.

Identifiers reach SQL only after :func:`config.check_identifier` accepted them and
the dialect's preparer quoted them; values are always bound parameters (or, for
PostgreSQL ``COPY``, literals quoted by psycopg2 itself).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import NoSuchTableError, OperationalError, SQLAlchemyError
from sqlalchemy.sql import sqltypes

from .config import Settings, mask_url
from .errors import BadSetting, DatabaseUnavailable, LockHeld, LockTimeout, RetentionError, translate
from .i18n import N_
from .identity import TableIdentity, postgres_identity, sqlite_identity, sqlite_lock_path

log = logging.getLogger(__name__)

NO_SUCH_TABLE = N_("no such table in the database (to try the tool: ./scripts/lrc demo-data creates it with demo rows)")

_ENGINES: dict[str, Engine] = {}

TIMESTAMP_TYPES = ("TIMESTAMP", "DATETIME", "DATE")


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    nullable: bool
    naive_timestamp: bool = False  # timestamp without time zone
    is_blob: bool = False
    is_date: bool = False  # date: compared by whole days in the table's zone
    generated: bool = False  # GENERATED ALWAYS AS (...): archived, never written back


@dataclass(frozen=True)
class TableInfo:
    """What the core needs to know about the log table, read from the database."""

    dialect: str  # "postgresql" | "sqlite"
    schema: str | None
    name: str
    columns: tuple[ColumnInfo, ...]
    primary_key: str  # the key column, or "a, b" for a composite key (``key`` holds the names)
    timestamp_column: str
    ts_indexed: bool
    key: tuple[str, ...] = ()  # primary key columns, in key order
    zone: str = "UTC"  # LOG_TIMESTAMP_TIMEZONE: the zone of zone-less timestamp and date columns
    rowid: str | None = None  # SQLite rowid tables: batches walk this (a TEXT key may hold NULLs)

    @property
    def ts_info(self) -> ColumnInfo:
        return self.columns[self.column_index(self.timestamp_column)]

    @property
    def manifest_key(self) -> str | list[str]:
        """The key as manifests record it: the column name, or the list of a composite key's names."""
        return self.key[0] if len(self.key) == 1 else list(self.key)

    @property
    def display_name(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column_index(self, name: str) -> int:
        return self.column_names.index(name)


SQLITE_BUSY_TIMEOUT_S = 30  # how long a SQLite statement waits for another session's lock by default


def get_engine(settings: Settings, *, bounded: bool = False) -> Engine:
    """A process-wide engine for the settings' URL (created once; no I/O here).

    ``bounded`` (a cleanup's own engine): with ``CLEANUP_LOCK_TIMEOUT_MS`` set, every statement
    on its connections waits at most that long for a lock another session holds (PostgreSQL
    ``lock_timeout``, SQLite's busy timeout) and then fails with LockTimeout; other front-end
    reads (pages, stats) keep the default engine.
    """
    url = settings.database_url
    wait_ms = settings.lock_timeout_ms if bounded else None
    key = url if wait_ms is None else f"{url}\0lock_timeout={int(wait_ms)}"
    engine = _ENGINES.get(key)
    if engine is None:
        backend = make_url(url).get_backend_name()
        if backend == "sqlite":
            # busy timeout: writers of the chat service and our batches take turns.
            engine = create_engine(url, connect_args={
                "timeout": SQLITE_BUSY_TIMEOUT_S if wait_ms is None else wait_ms / 1000})
        else:
            # client_encoding UTF8: backups are UTF-8 whatever the server's encoding.
            args: dict[str, Any] = {"connect_timeout": 10, "client_encoding": "UTF8"}
            if wait_ms is not None:
                args["options"] = f"-c lock_timeout={int(wait_ms)}"
            engine = create_engine(url, pool_pre_ping=True, connect_args=args)
        _ENGINES[key] = engine
    return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests, shutdown)."""
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()


def check_connection(settings: Settings, *, bounded: bool = False) -> Engine:
    """Connect once; raises DatabaseUnavailable with a one-line reason (LockTimeout when the
    database stayed locked by another session). ``bounded``: see :func:`get_engine`."""
    engine = get_engine(settings, bounded=bounded)
    if engine.dialect.name == "sqlite":
        path = make_url(settings.database_url).database or ""
        parent = Path(path).resolve().parent
        if not parent.is_dir():
            raise DatabaseUnavailable(mask_url(settings.database_url), N_("folder {folder} does not exist"), folder=str(parent))
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except (OperationalError, SQLAlchemyError) as exc:
        raise _unavailable(settings, exc) from None
    return engine


def _unavailable(settings: Settings, exc: BaseException) -> RetentionError:
    """DatabaseUnavailable for a database that does not answer; LockTimeout for one that answers locked."""
    own = translate(exc)
    if isinstance(own, LockTimeout):
        return own
    why = str(getattr(exc, "orig", exc)).strip().splitlines()
    return DatabaseUnavailable(mask_url(settings.database_url), why[0] if why else "unknown")


def quote(engine: Engine, name: str) -> str:
    """Quote one identifier for this dialect."""
    return engine.dialect.identifier_preparer.quote_identifier(name)


def qualified(engine: Engine, schema: str | None, name: str) -> str:
    """Quoted ``schema.table`` or ``table``."""
    return f"{quote(engine, schema)}.{quote(engine, name)}" if schema else quote(engine, name)


def describe_table(settings: Settings, engine: Engine | None = None) -> TableInfo:
    """Read the log table's columns, primary key and timestamp index.

    Raises BadSetting when the table or column is missing, when the table has no
    primary key (rows could not be deleted exactly by key), or when the timestamp
    column is not a timestamp. Reads only the catalog (and the database's TimeZone).
    """
    from .shape import column_flags, sqlite_rowid, table_zone  # shape imports this module
    engine = engine or check_connection(settings)
    schema, name = settings.table_parts
    if engine.dialect.name == "sqlite":  # names are case-insensitive there: use the stored spelling
        name = table_identity(settings, engine).name
    insp = inspect(engine)
    try:
        cols = insp.get_columns(name, schema=schema)
    except NoSuchTableError:
        raise BadSetting("LOG_TABLE", settings.table, NO_SUCH_TABLE) from None
    if not cols:
        raise BadSetting("LOG_TABLE", settings.table, NO_SUCH_TABLE)
    columns = tuple(
        ColumnInfo(
            c["name"],
            str(c["type"]),
            bool(c.get("nullable", True)),
            naive_timestamp=isinstance(c["type"], sqltypes.DateTime) and not c["type"].timezone,
            is_blob=isinstance(c["type"], sqltypes.LargeBinary) or str(c["type"]).upper() == "BLOB",
            **column_flags(c),
        )
        for c in cols
    )
    names = [c.name for c in columns]
    ts = settings.timestamp_column
    if ts not in names:
        raise BadSetting("LOG_TIMESTAMP_COLUMN", ts, N_("no such column in {table}"), table=settings.table)
    ts_type = next(c["type"] for c in cols if c["name"] == ts)
    if not any(t in str(ts_type).upper() for t in TIMESTAMP_TYPES) and engine.dialect.name != "sqlite":
        raise BadSetting("LOG_TIMESTAMP_COLUMN", ts, N_("is {type}, not a timestamp"), type=str(ts_type))
    pk = insp.get_pk_constraint(name, schema=schema).get("constrained_columns") or []
    if not pk:
        raise BadSetting(
            "LOG_TABLE",
            settings.table,
            N_("needs a primary key: rows are deleted exactly by key, and this table has none"),
        )
    indexed = any(
        (ix.get("column_names") or [None])[0] == ts for ix in insp.get_indexes(name, schema=schema)
    )
    if pk[0] == ts:
        indexed = True
    return TableInfo(
        dialect=engine.dialect.name,
        schema=schema,
        name=name,
        columns=columns,
        primary_key=", ".join(pk),
        timestamp_column=ts,
        ts_indexed=indexed,
        key=tuple(pk),
        zone=table_zone(settings, engine),
        rowid=sqlite_rowid(engine, qualified(engine, schema, name), names),
    )


def index_warning(info: TableInfo) -> str | None:
    """A one-line warning when the timestamp column has no index, else None."""
    if info.ts_indexed:
        return None
    return (
        f"{info.display_name}.{info.timestamp_column} has no index: previews, stats and "
        f"cleanups scan the whole table (CREATE INDEX ON {info.display_name} ({info.timestamp_column}))"
    )


# ---------------------------------------------------------------------------
# The cleanup lock


def table_identity(settings: Settings, engine: Engine | None = None) -> TableIdentity:
    """The server's identity of the log table (docs/design.md, "Locking by identity"). Reads only.

    Every spelling of one table (host name, omitted port, ``public.`` prefix, relative or
    symlinked SQLite path, letter case on SQLite) gives the same identity. Raises
    BadSetting when the table does not exist, DatabaseUnavailable when unreachable.
    """
    engine = engine or check_connection(settings)
    schema, name = settings.table_parts
    try:
        with engine.connect() as conn:
            dbapi = conn.connection.driver_connection
            if engine.dialect.name == "sqlite":
                return sqlite_identity(dbapi, database=make_url(settings.database_url).database or "", table=name)
            return postgres_identity(dbapi, schema=schema, table=name)
    except LookupError:
        raise BadSetting("LOG_TABLE", settings.table, NO_SUCH_TABLE) from None
    except SQLAlchemyError as exc:
        raise _unavailable(settings, exc) from None


def lock_key(settings: Settings) -> int:
    """The signed 64-bit ``pg_advisory_lock`` key of the table, the same for every spelling."""
    return table_identity(settings).lock_key


class SqliteFileLock:
    """An exclusive ``flock`` on a file beside the database.

    The kernel drops it when the process dies, so a kill -9 never leaves a stale
    lock; two opens in one process also exclude each other (dashboard + trigger).
    """

    def __init__(self, settings: Settings, identity: TableIdentity | None = None) -> None:
        self.path = sqlite_lock_path(identity or table_identity(settings))
        self.table = settings.table
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockHeld(self.table) from None
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def pg_try_lock(raw_conn: Any, key: int) -> bool:
    """Take the session-level advisory lock on this psycopg2 connection, if free."""
    with raw_conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        got = bool(cur.fetchone()[0])
    raw_conn.commit()
    return got


def cleanup_running(settings: Settings) -> bool:
    """True when some process holds this table's cleanup lock right now. Changes nothing."""
    engine = get_engine(settings)
    identity = table_identity(settings, engine)
    if engine.dialect.name == "sqlite":
        lock = SqliteFileLock(settings, identity)
        if not lock.path.exists():  # never held since it was made: nothing runs, and a probe creates no file
            return False
        try:
            lock.acquire()
        except LockHeld:
            return True
        lock.release()
        return False
    # Read pg_locks rather than try the lock: a probe must never make a real cleanup lose.
    k = identity.lock_key & 0xFFFFFFFFFFFFFFFF
    with engine.connect() as conn:
        held = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND classid = CAST(%(hi)s AS oid) AND objid = CAST(%(lo)s AS oid) "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            {"hi": k >> 32, "lo": k & 0xFFFFFFFF},
        ).scalar()
    return bool(held)


class LockedConnection:
    """A DB-API connection of its own, outside the pool, that can hold the cleanup lock.

    Used by cleanups and restores; ``close()`` releases the lock.
    """

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self._raw, self.dbapi = _detached(engine)
        self._others: list[Any] = []
        self._file_lock: SqliteFileLock | None = None
        if engine.dialect.name == "sqlite":
            self.dbapi.isolation_level = None  # we issue BEGIN IMMEDIATE / COMMIT ourselves

    def lock(self, *, patience_s: float = 1.0) -> None:
        """Take the table's cleanup lock or raise LockHeld.

        Tries for ``patience_s``: a dashboard probing ``cleanup_running`` on SQLite
        holds the lock for microseconds and must not make a real cleanup give up.
        """
        deadline = time.monotonic() + patience_s
        identity = table_identity(self.settings, self.engine)
        while True:
            try:
                if self.engine.dialect.name == "sqlite":
                    lock = SqliteFileLock(self.settings, identity)
                    lock.acquire()
                    self._file_lock = lock
                elif not pg_try_lock(self.dbapi, identity.lock_key):
                    raise LockHeld(self.settings.table)
                return
            except LockHeld:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def another(self) -> Any:
        """A second DB-API connection of the same engine, closed by ``close()`` (PostgreSQL
        batches read through it while this one deletes)."""
        raw, dbapi = _detached(self.engine)
        self._others.append(raw)
        return dbapi

    def close(self) -> None:
        for raw in [*self._others, self._raw]:
            try:
                raw.close()  # ends the session: PostgreSQL drops the advisory lock
            except Exception:
                log.debug("closing a run connection failed", exc_info=True)
        self._others.clear()
        if self._file_lock:
            self._file_lock.release()


def _detached(engine: Engine) -> tuple[Any, Any]:
    """(pool entry, DB-API connection) taken out of the pool: closing it really closes it,
    and with it any session lock."""
    raw = engine.raw_connection()
    dbapi = raw.driver_connection
    raw.detach()
    return raw, dbapi
