"""Space after a cleanup: how big the table is, what is dead or free, and VACUUM.

A batched DELETE does not make a table smaller. On PostgreSQL the deleted rows become
dead tuples; ``VACUUM`` (autovacuum does it too, later) makes their space reusable by new
rows of the same table, and only ``VACUUM FULL`` (which locks the table out for its whole
rewrite; this tool never runs it) gives it back to the operating system. On SQLite the
pages go to the file's free list, reused by later inserts; ``VACUUM`` rewrites the file
to give them back (it needs about the file's size free on disk and locks the database).

:func:`measure` reads, :func:`vacuum` runs ``VACUUM (ANALYZE) table`` (PostgreSQL) or
``VACUUM`` (SQLite) outside any transaction.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from . import history
from .db import TableInfo, qualified
from .errors import RetentionError, map_exceptions
from .i18n import N_

log = logging.getLogger(__name__)

EXPLANATION = N_(
    "Deleting rows does not shrink a table at once. On PostgreSQL the deleted rows stay as dead tuples "
    "until VACUUM (autovacuum, or CLEANUP_VACUUM=true after each cleanup) marks their space reusable for new "
    "rows; the files shrink only with VACUUM FULL, which locks the table for its whole rewrite and which this "
    "console never runs. On SQLite the pages go to the file's free list and are reused by new rows; VACUUM "
    "(CLEANUP_VACUUM=true) rewrites the file to give them back to the disk."
)


@dataclass(frozen=True)
class Space:
    """PostgreSQL: table bytes (pg_total_relation_size) and dead tuples; SQLite: file bytes and free bytes."""

    table_bytes: int | None
    dead_tuples: int | None = None
    free_bytes: int | None = None


def measure(engine: Engine, info: TableInfo) -> Space:
    """The table's space now. Raises DatabaseError."""
    with map_exceptions(), engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            name = qualified(engine, info.schema, info.name)
            size, dead = conn.execute(
                text("SELECT pg_total_relation_size(CAST(:t AS regclass)), "
                     "(SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = CAST(:t AS regclass))"),
                {"t": name}).one()
            return Space(table_bytes=int(size), dead_tuples=None if dead is None else int(dead))
        page = conn.exec_driver_sql("PRAGMA page_size").scalar() or 0
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar() or 0
        free = conn.exec_driver_sql("PRAGMA freelist_count").scalar() or 0
        return Space(table_bytes=int(page * pages), free_bytes=int(page * free))


def measure_quietly(engine: Engine, info: TableInfo) -> Space | None:
    """:func:`measure`, or None when it fails (a report must not fail a cleanup)."""
    try:
        return measure(engine, info)
    except RetentionError as exc:
        log.warning("could not measure the space of %s: %s", info.display_name, exc.one_line())
        return None


def vacuum(engine: Engine, info: TableInfo, *, lock_timeout_ms: int | None = None) -> bool:
    """``VACUUM (ANALYZE)`` the table (SQLite: ``VACUUM`` the file), outside a transaction; never FULL.

    Returns False (and logs why) when it failed: the cleanup it follows stays what it was.
    """
    name = qualified(engine, info.schema, info.name)
    try:
        with map_exceptions(), engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if engine.dialect.name == "postgresql":
                if lock_timeout_ms is not None:
                    conn.exec_driver_sql(f"SET lock_timeout = {int(lock_timeout_ms)}")
                conn.exec_driver_sql(f"VACUUM (ANALYZE) {name}")
                conn.exec_driver_sql("RESET lock_timeout")
            else:
                conn.exec_driver_sql("VACUUM")
    except RetentionError as exc:
        log.warning("VACUUM of %s failed: %s", info.display_name, exc.one_line())
        return False
    log.info("vacuumed %s", info.display_name)
    return True


def with_space(result: Any, before: Space | None, *, engine: Engine, info: TableInfo, settings: Any) -> Any:
    """``result`` (a RunResult) with the table's space before and after; VACUUM first with CLEANUP_VACUUM.

    Side effect: records the numbers in the run's history row (History, ``history --json``); a
    failure to record them is logged, never raised: the cleanup is done.
    """
    vacuumed = vacuum(engine, info, lock_timeout_ms=settings.lock_timeout_ms) if settings.vacuum else None
    after = measure_quietly(engine, info)
    fields = dict(vacuumed=vacuumed, table_bytes_before=before.table_bytes if before else None,
                  table_bytes_after=after.table_bytes if after else None,
                  dead_tuples=after.dead_tuples if after else None, free_bytes=after.free_bytes if after else None)
    try:
        with map_exceptions():
            history.update_run(engine, info.schema, result.run_id, **fields)
    except RetentionError as exc:
        log.warning("could not record the space of %s in run %s: %s", info.display_name, result.run_id,
                    exc.one_line())
    return dataclasses.replace(result, **fields)
