"""The batcher of a run: the dialect's :mod:`core.batches` class, set up on the run's locked connection."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import pacing
from .batches import PostgresBatcher, SqliteBatcher
from .db import LockedConnection, qualified, quote
from .dependents import skip_referenced_sql
from .errors import DatabaseError, map_exceptions
from .timefmt import SqliteTsFormat, detect_sqlite_format

if TYPE_CHECKING:
    from .cleanup import Run

log = logging.getLogger(__name__)


def batcher_for(run: Run, conn: LockedConnection) -> tuple[Any, SqliteTsFormat | None]:
    """(batcher, SQLite timestamp form or None) for ``run`` on ``conn``, which holds the table's lock.

    SQLite: checks every stored timestamp's form first (raises BadSetting). PostgreSQL: opens a
    second connection for the COPY when it can, and sets CLEANUP_LOCK_TIMEOUT_MS on both.
    """
    engine, info = run.engine, run.info
    table = qualified(engine, info.schema, info.name)
    skip = skip_referenced_sql(run.dependents, table=table, quote=lambda name: quote(engine, name))
    if info.dialect == "sqlite":
        fmt = detect_sqlite_format(conn.dbapi, table, quote(engine, info.timestamp_column), full=True,
                                   rowid=info.rowid)
        return SqliteBatcher(conn.dbapi, info, cutoff=run.cutoff, batch_size=run.batch_size, engine=engine,
                             fmt=fmt, skip=skip), fmt
    batcher = PostgresBatcher(conn.dbapi, info, cutoff=run.cutoff, batch_size=run.batch_size, engine=engine,
                              reader=_second_connection(conn), skip=skip)
    pacing.set_lock_timeout([c for c in (conn.dbapi, batcher.reader) if c is not None],
                            run.settings.lock_timeout_ms)
    return batcher, None


def _second_connection(conn: LockedConnection) -> Any | None:
    """A reader for the batches' COPY, or None (slower, one connection) when the server refuses one."""
    try:
        with map_exceptions():
            return conn.another()
    except DatabaseError as exc:
        log.warning("no second database connection (%s); each batch copies, then deletes", exc.one_line())
        return None
