"""The run-history table (``retention_runs``) and its migrations, in the same database as the log table.

It is also the cleanup's journal: each batch's DELETE commits together with the
byte length of the backup that holds the batch (``committed_bytes``), so after a
crash the next run knows exactly which part of a partial backup is real.

The table grows by migrations: :data:`MIGRATIONS` is an ordered list of columns added
after the first version; the version a table has reached is kept in
``retention_schema``. Writers bring the table up to date first (:func:`ensure_history`,
safe when two processes race); readers never change it and select only the columns
that exist, so an older table, or a role that may only read, still reads.
"""

from __future__ import annotations

import logging
import re
import socket
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from .db import qualified, quote
from .models import NotifyStatus, RunResult, RunStatus, Trigger
from .timefmt import as_utc

log = logging.getLogger(__name__)

HISTORY_TABLE = "retention_runs"
VERSION_TABLE = "retention_schema"

# (version, column): each step adds one nullable column to a table of the version before.
# Version 1 is the table as first released. Append only; never edit a released step.
MIGRATIONS: tuple[tuple[int, Column], ...] = (
    (2, Column("rows_matched", BigInteger)),  # rows older than the cutoff when the run looked (dry runs)
    (3, Column("table_key", String(300))),  # the server's canonical schema.table (core.identity): every spelling
    (4, Column("rows_skipped", BigInteger)),  # old rows kept: still referenced through RESTRICT / NO ACTION
    (5, Column("notes", Text)),  # what the operator should know: RLS, delete triggers that fired (one per line)
    (6, Column("backup_url", Text)),  # the stored object (BACKUP_STORE), s3://…
    # the table's space around the run (core.space): PostgreSQL pg_total_relation_size and n_dead_tup,
    # SQLite the file and its free pages; vacuumed: NULL not asked, else whether CLEANUP_VACUUM's VACUUM ran
    (7, Column("table_bytes_before", BigInteger)),
    (8, Column("table_bytes_after", BigInteger)),
    (9, Column("dead_tuples", BigInteger)),
    (10, Column("free_bytes", BigInteger)),
    (11, Column("vacuumed", Boolean)),
)
SCHEMA_VERSION = MIGRATIONS[-1][0] if MIGRATIONS else 1

_tables: dict[tuple[str, str | None], Table] = {}
_ensured: set[tuple[str, str | None]] = set()
_readable: dict[tuple[str, str | None], Table] = {}


def _key(engine: Engine, schema: str | None) -> tuple[str, str | None]:
    return (str(engine.url), schema)


def history_table(engine: Engine, schema: str | None) -> Table:
    """The history Table object, at the latest version, for this database and schema (no I/O)."""
    key = _key(engine, schema)
    if key not in _tables:
        md = MetaData(schema=schema)
        _tables[key] = Table(
            HISTORY_TABLE,
            md,
            Column("run_id", String(36), primary_key=True),
            Column("table_name", String(130), nullable=False, index=True),
            Column("trigger", String(20), nullable=False),
            Column("status", String(20), nullable=False),
            Column("started_at", DateTime(timezone=True), nullable=False),
            Column("finished_at", DateTime(timezone=True)),
            Column("cutoff", DateTime(timezone=True), nullable=False),
            Column("rows_archived", BigInteger, nullable=False, default=0),
            Column("rows_deleted", BigInteger, nullable=False, default=0),
            Column("backup_file", Text),
            Column("manifest_file", Text),
            Column("sha256", String(64)),
            Column("backup_bytes", BigInteger),
            Column("notification", String(20), nullable=False, default=NotifyStatus.PENDING.value),
            Column("notification_detail", Text),
            Column("error", Text),
            # journal of an unfinished run
            Column("partial_file", Text),
            Column("committed_bytes", BigInteger, nullable=False, default=0),
            Column("batches", Integer, nullable=False, default=0),
            Column("last_key", Text),
            Column("min_ts", DateTime(timezone=True)),
            Column("max_ts", DateTime(timezone=True)),
            Column("host", String(255)),
            Column("pid", Integer),
            *(Column(c.name, c.type) for _, c in MIGRATIONS),
        )
        Table(VERSION_TABLE, md, Column("name", String(64), primary_key=True),
              Column("version", Integer, nullable=False))
    return _tables[key]


def ensure_history(engine: Engine, schema: str | None) -> Table:
    """Create the history table if it is missing, or migrate it to :data:`SCHEMA_VERSION`; returns it.

    Never drops anything: an older table gets the missing columns (ALTER TABLE … ADD
    COLUMN). Safe when two processes or threads race (the loser finds the work done).
    Raises SQLAlchemyError when the role may not create or alter the table.
    """
    table = history_table(engine, schema)
    key = _key(engine, schema)
    if key in _ensured:
        return table
    existed = inspect(engine).has_table(HISTORY_TABLE, schema=schema)
    try:
        table.metadata.create_all(engine, checkfirst=True)
    except (IntegrityError, ProgrammingError, OperationalError):
        insp = inspect(engine)
        if not (insp.has_table(HISTORY_TABLE, schema=schema) and insp.has_table(VERSION_TABLE, schema=schema)):
            raise
    version = _version(engine, schema) if existed else SCHEMA_VERSION
    for step, column in MIGRATIONS:
        if step > version:
            _add_column(engine, schema, column)
    if version < SCHEMA_VERSION or not existed:
        _set_version(engine, schema, SCHEMA_VERSION)
    _ensured.add(key)
    _readable.pop(key, None)
    return table


def _version(engine: Engine, schema: str | None) -> int:
    """The version recorded for the history table; 1 (the first release, unversioned) when none is."""
    vt = history_table(engine, schema).metadata.tables[_full(schema, VERSION_TABLE)]
    with engine.connect() as conn:
        found = conn.execute(select(vt.c.version).where(vt.c.name == HISTORY_TABLE)).scalar()
    return int(found or 1)


def _full(schema: str | None, name: str) -> str:
    return f"{schema}.{name}" if schema else name


def _add_column(engine: Engine, schema: str | None, column: Column) -> None:
    """ALTER TABLE … ADD COLUMN, unless another process just did."""
    if column.name in {c["name"] for c in inspect(engine).get_columns(HISTORY_TABLE, schema=schema)}:
        return
    ddl = column.type.compile(dialect=engine.dialect)
    sql = (f"ALTER TABLE {qualified(engine, schema, HISTORY_TABLE)} "
           f"ADD COLUMN {quote(engine, column.name)} {ddl}")
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    except (ProgrammingError, OperationalError):
        if column.name not in {c["name"] for c in inspect(engine).get_columns(HISTORY_TABLE, schema=schema)}:
            raise
    log.info("history table %s: added column %s", HISTORY_TABLE, column.name)


def _set_version(engine: Engine, schema: str | None, version: int) -> None:
    vt = history_table(engine, schema).metadata.tables[_full(schema, VERSION_TABLE)]
    with engine.begin() as conn:
        conn.execute(update(vt).where(vt.c.name == HISTORY_TABLE, vt.c.version < version).values(version=version))
        recorded = conn.execute(select(vt.c.version).where(vt.c.name == HISTORY_TABLE)).first() is not None
    if recorded:
        return
    try:
        with engine.begin() as conn:
            conn.execute(vt.insert().values(name=HISTORY_TABLE, version=version))
    except IntegrityError:
        pass  # another process recorded it meanwhile


def readable_table(engine: Engine, schema: str | None) -> Table | None:
    """The history table with only the columns the database has (None when there is no table). Reads the catalog."""
    key = _key(engine, schema)
    if key in _ensured:
        return history_table(engine, schema)
    if key not in _readable:
        insp = inspect(engine)
        if not insp.has_table(HISTORY_TABLE, schema=schema):
            return None
        present = {c["name"] for c in insp.get_columns(HISTORY_TABLE, schema=schema)}
        full = history_table(engine, schema)
        _readable[key] = Table(HISTORY_TABLE, MetaData(schema=schema),
                               *(Column(c.name, c.type, primary_key=c.primary_key)
                                 for c in full.columns if c.name in present))
    return _readable[key]


def _stored(values: dict[str, Any]) -> dict[str, Any]:
    """Enums as their stable ``.value`` strings."""
    return {k: v.value if isinstance(v, Enum) else v for k, v in values.items()}


def insert_run(engine: Engine, schema: str | None, **values: Any) -> None:
    """Record a run (committed at once). Migrates the table first if needed."""
    table = ensure_history(engine, schema)
    values.setdefault("host", socket.gethostname()[:255])
    with engine.begin() as conn:
        conn.execute(table.insert().values(**_stored(values)))


def update_run(engine: Engine, schema: str | None, run_id: str, **values: Any) -> None:
    """Change a run's row (committed at once)."""
    table = ensure_history(engine, schema)
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.run_id == run_id).values(**_stored(values)))


def get_run(engine: Engine, schema: str | None, run_id: str) -> dict[str, Any] | None:
    """One run's row, or None. Read-only."""
    table = readable_table(engine, schema)
    if table is None:
        return None
    with engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.run_id == run_id)).mappings().first()
    return dict(row) if row else None


def list_runs(
    engine: Engine, schema: str | None, table_name: str | tuple[str, ...] | None = None, *, limit: int = 100,
    status: RunStatus | None = None, table_key: str | None = None,
) -> list[dict[str, Any]]:
    """Runs newest first (optionally of one table or one status). Read-only.

    ``table_key`` (the server's identity, core.identity) selects the table's runs under
    every spelling; rows written before that column existed match by ``table_name``
    (one name or several).
    """
    table = readable_table(engine, schema)
    if table is None:
        return []
    query = select(table).order_by(table.c.started_at.desc()).limit(limit)
    names = (table_name,) if isinstance(table_name, str) else tuple(table_name or ())
    if table_key and "table_key" in table.c:
        query = query.where(or_(table.c.table_key == table_key,
                                and_(table.c.table_key.is_(None), table.c.table_name.in_(names))))
    elif names:
        query = query.where(table.c.table_name.in_(names))
    if status:
        query = query.where(table.c.status == status.value)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def row_to_result(row: dict[str, Any]) -> RunResult:
    """A history row as the RunResult that ``run --json`` prints."""
    started = as_utc(row["started_at"])
    finished = as_utc(row["finished_at"]) if row.get("finished_at") else None
    return RunResult(
        run_id=row["run_id"],
        status=RunStatus(row["status"]),
        table=row["table_name"],
        cutoff=as_utc(row["cutoff"]),
        rows_archived=int(row["rows_archived"] or 0),
        rows_deleted=int(row["rows_deleted"] or 0),
        backup_file=row.get("backup_file"),
        manifest_file=row.get("manifest_file"),
        sha256=row.get("sha256"),
        notification=NotifyStatus(row.get("notification") or NotifyStatus.PENDING),
        duration_s=round((finished - started).total_seconds(), 3) if finished else 0.0,
        trigger=Trigger(row["trigger"]),
        started_at=started,
        finished_at=finished,
        error=row.get("error"),
        notification_detail=row.get("notification_detail"),
        backup_bytes=row.get("backup_bytes"),
        rows_matched=int(row.get("rows_matched") or 0),
        rows_skipped=int(row.get("rows_skipped") or 0),
        notes=tuple((row.get("notes") or "").splitlines()),
        backup_url=row.get("backup_url"),
        **{name: _optional(row.get(name)) for name in SPACE_FIELDS},
    )


SPACE_FIELDS = ("table_bytes_before", "table_bytes_after", "dead_tuples", "free_bytes", "vacuumed")


def _optional(value: Any) -> Any:
    """A space column as RunResult holds it: None stays None; SQLite may hand back 0/1 for a boolean."""
    return value if value is None or isinstance(value, bool) else int(value)


# ---------------------------------------------------------------------------
# The journal update, run on the cleanup's own DB-API connection, inside the
# batch transaction, so it commits atomically with the batch's DELETE.


def journal_sql(engine: Engine, schema: str | None) -> str:
    """The UPDATE that records a batch in the run's row (DB-API parameter style of the dialect)."""
    sql = (
        f"UPDATE {qualified(engine, schema, HISTORY_TABLE)} SET committed_bytes = :committed_bytes, "
        "rows_archived = :rows, rows_deleted = :rows, batches = :batches, last_key = :last_key, "
        f"min_ts = :min_ts, max_ts = :max_ts WHERE run_id = :run_id AND status = '{RunStatus.RUNNING.value}'"
    )
    if engine.dialect.name == "postgresql":
        sql = re.sub(r":(\w+)", r"%(\1)s", sql)
    return sql


def db_time(dialect: str, value: datetime | None) -> Any:
    """A datetime as the DB-API driver should receive it for a DateTime(timezone=True) column."""
    if value is None:
        return None
    value = as_utc(value)
    if dialect == "sqlite":
        # SQLAlchemy's SQLite storage form, so Core reads it back.
        return value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value
