"""The run-history table (``retention_runs``), in the same database as the log table.

It is also the cleanup's journal: each batch's DELETE commits together with the
byte length of the backup that holds the batch (``committed_bytes``), so after a
crash the next run knows exactly which part of a partial backup is real.
"""

from __future__ import annotations

import logging
import re
import socket
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from .models import RunResult
from .timefmt import as_utc

log = logging.getLogger(__name__)

HISTORY_TABLE = "retention_runs"
_tables: dict[tuple[str, str | None], Table] = {}


def history_table(engine: Engine, schema: str | None) -> Table:
    """The history Table object for this database and schema (no I/O)."""
    key = (str(engine.url), schema)
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
            Column("notification", String(20), nullable=False, default="pending"),
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
        )
    return _tables[key]


_ensured: set[tuple[str, str | None]] = set()


def ensure_history(engine: Engine, schema: str | None) -> Table:
    """Create the history table if it is missing; returns it.

    Safe when two processes or threads race to create it on a fresh database
    (PostgreSQL then reports a duplicate type; the loser just uses the table).
    """
    table = history_table(engine, schema)
    key = (str(engine.url), schema)
    if key in _ensured:
        return table
    try:
        table.metadata.create_all(engine, checkfirst=True)
    except (IntegrityError, ProgrammingError, OperationalError):
        if not inspect(engine).has_table(HISTORY_TABLE, schema=schema):
            raise
    _ensured.add(key)
    return table


def insert_run(engine: Engine, schema: str | None, **values: Any) -> None:
    """Record a run (committed at once)."""
    table = ensure_history(engine, schema)
    values.setdefault("host", socket.gethostname()[:255])
    with engine.begin() as conn:
        conn.execute(table.insert().values(**values))


def update_run(engine: Engine, schema: str | None, run_id: str, **values: Any) -> None:
    """Change a run's row (committed at once)."""
    table = history_table(engine, schema)
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.run_id == run_id).values(**values))


def get_run(engine: Engine, schema: str | None, run_id: str) -> dict[str, Any] | None:
    table = ensure_history(engine, schema)
    with engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.run_id == run_id)).mappings().first()
    return dict(row) if row else None


def list_runs(
    engine: Engine, schema: str | None, table_name: str | None = None, *, limit: int = 100,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """Runs newest first (optionally of one table or one status)."""
    table = ensure_history(engine, schema)
    query = select(table).order_by(table.c.started_at.desc()).limit(limit)
    if table_name:
        query = query.where(table.c.table_name == table_name)
    if status:
        query = query.where(table.c.status == status)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def row_to_result(row: dict[str, Any]) -> RunResult:
    """A history row as the RunResult that ``run --json`` prints."""
    started = as_utc(row["started_at"])
    finished = as_utc(row["finished_at"]) if row.get("finished_at") else None
    return RunResult(
        run_id=row["run_id"],
        status=row["status"],
        table=row["table_name"],
        cutoff=as_utc(row["cutoff"]),
        rows_archived=int(row["rows_archived"] or 0),
        rows_deleted=int(row["rows_deleted"] or 0),
        backup_file=row.get("backup_file"),
        manifest_file=row.get("manifest_file"),
        sha256=row.get("sha256"),
        notification=row.get("notification") or "pending",
        duration_s=round((finished - started).total_seconds(), 3) if finished else 0.0,
        trigger=row["trigger"],
        started_at=started,
        finished_at=finished,
        error=row.get("error"),
        notification_detail=row.get("notification_detail"),
        backup_bytes=row.get("backup_bytes"),
    )


# ---------------------------------------------------------------------------
# The journal update, run on the cleanup's own DB-API connection, inside the
# batch transaction, so it commits atomically with the batch's DELETE.


def journal_sql(dialect: str, schema: str | None, quote: Any) -> str:
    name = f"{quote(schema)}.{quote(HISTORY_TABLE)}" if schema else quote(HISTORY_TABLE)
    sql = (
        f"UPDATE {name} SET committed_bytes = :committed_bytes, rows_archived = :rows, "
        "rows_deleted = :rows, batches = :batches, last_key = :last_key, "
        "min_ts = :min_ts, max_ts = :max_ts WHERE run_id = :run_id AND status = 'running'"
    )
    if dialect == "postgresql":
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
