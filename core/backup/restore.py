"""Restore: insert a verified backup's rows back into the table, skipping keys already present."""

from __future__ import annotations

import gzip
import logging
import time
from pathlib import Path
from typing import Any

from ..config import Settings
from ..db import LockedConnection, TableInfo, check_connection, describe_table, qualified, quote
from ..errors import BackupMismatch, RestoreError
from ..models import RestoreResult
from ..partition_layout import recreate_for_restore
from ..timefmt import csv_to_sqlite, detect_sqlite_format
from .catalog import manifest_of, resolve_backup, verify_backup
from .csvfile import iter_records

log = logging.getLogger(__name__)


def restore_backup(settings: Settings, name: str | Path) -> RestoreResult:
    """Insert a backup's rows back into the table; rows whose key is present are skipped.

    The backup is verified first and must be of this table with the same columns.
    Runs in one transaction, holding the cleanup lock: on any error the table is
    unchanged. Raises BackupNotFound, BackupMismatch, RestoreError, LockHeld.
    """
    t0 = time.monotonic()
    path = resolve_backup(settings, name)
    m = manifest_of(path)
    engine = check_connection(settings)
    info = describe_table(settings, engine)
    if m.get("table") != info.display_name:
        raise RestoreError(f"{path.name} is a backup of {m.get('table')!r}, not of {info.display_name!r}")
    names = [c.get("name") for c in m.get("columns") or []]
    if names != info.column_names:
        raise RestoreError(f"{path.name} has columns {names}, the table has {info.column_names}")
    if m.get("primary_key") != info.primary_key:
        raise RestoreError(f"{path.name} is keyed on {m.get('primary_key')!r}, the table on {info.primary_key!r}")
    v = verify_backup(settings, path)
    if not v.ok:
        raise BackupMismatch(str(path), "the backup", "matching its manifest", v.problem)
    # Restores and cleanups exclude each other: a cleanup running meanwhile could
    # archive restored rows a second time.
    locked = LockedConnection(settings, engine)
    try:
        locked.lock()
        if info.dialect == "postgresql":
            restored = _restore_pg(engine, locked.dbapi, info, path, m.get("partitions") or [])
        else:
            restored = _restore_sqlite(engine, locked.dbapi, info, path)
    finally:
        locked.close()
    result = RestoreResult(str(path), info.display_name, v.rows, restored, v.rows - restored,
                           round(time.monotonic() - t0, 3))
    log.info("restored %d rows of %s into %s (%d already present)", restored, path.name, info.display_name,
             result.rows_skipped)
    return result


def _restore_pg(engine: Any, conn: Any, info: TableInfo, path: Path, partitions: list[dict[str, Any]]) -> int:
    """COPY into a temporary table, recreate dropped partitions (manifest ``partitions``), insert."""
    table = qualified(engine, info.schema, info.name)
    cols = ", ".join(quote(engine, c) for c in info.column_names)
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL TIME ZONE 'UTC'")
            for name in recreate_for_restore(cur, table, partitions):
                log.info("recreated partition %s from the backup's manifest", name)
            cur.execute(f"CREATE TEMP TABLE _retention_restore (LIKE {table}) ON COMMIT DROP")
            with gzip.open(path, "rb") as f:
                cur.copy_expert(
                    f"COPY _retention_restore ({cols}) FROM STDIN WITH (FORMAT csv, HEADER true)", f, size=1 << 20
                )
            cur.execute(
                f"INSERT INTO {table} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM _retention_restore "
                "ON CONFLICT DO NOTHING"
            )
            restored = cur.rowcount
        conn.commit()
        return int(restored)
    except Exception as exc:  # any failure: roll back, the table is unchanged
        conn.rollback()
        if isinstance(exc, RestoreError):
            raise
        if isinstance(exc, (OSError, ValueError, EOFError)):
            raise RestoreError(f"{path.name}: {exc}") from None
        raise RestoreError(f"{path.name}: {' '.join(str(getattr(exc, 'pgerror', None) or exc).split())}") from None


def _restore_sqlite(engine: Any, conn: Any, info: TableInfo, path: Path) -> int:
    table = qualified(engine, info.schema, info.name)
    cols = ", ".join(quote(engine, c) for c in info.column_names)
    marks = ", ".join("?" for _ in info.column_names)
    try:
        fmt = detect_sqlite_format(conn, table, quote(engine, info.timestamp_column), full=False)
        conn.execute("BEGIN IMMEDIATE")
        before = conn.total_changes
        sql = (f"INSERT INTO {table} ({cols}) VALUES ({marks}) "
               "ON CONFLICT DO NOTHING")
        for batch in _sqlite_batches(info, path, fmt):
            conn.executemany(sql, batch)
        restored = conn.total_changes - before
        conn.execute("COMMIT")
        return int(restored)
    except Exception as exc:  # any failure: roll back, the table is unchanged
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, RestoreError):
            raise
        if isinstance(exc, RestoreError):
            raise
        raise RestoreError(f"{path.name}: {' '.join(str(exc).split())}") from None


def _sqlite_batches(info: TableInfo, path: Path, fmt: Any) -> Any:
    """The backup's records as SQLite values, 5000 at a time (timestamps in the table's form, blobs as bytes)."""
    ts_i = info.column_index(info.timestamp_column)
    blobs = [i for i, c in enumerate(info.columns) if c.is_blob]
    records = iter_records(path)
    header = next(records, None)
    if header != info.column_names:
        raise RestoreError(f"{path.name}: header {header} does not match the table's columns")
    batch: list[list[Any]] = []
    for rec in records:
        if len(rec) != len(info.column_names):
            raise RestoreError(f"{path.name}: a record has {len(rec)} fields, expected {len(info.column_names)}")
        if rec[ts_i] is not None:
            rec[ts_i] = csv_to_sqlite(fmt, rec[ts_i])
        for i in blobs:
            if rec[i] is not None and rec[i].startswith("\\x"):
                rec[i] = bytes.fromhex(rec[i][2:])
        batch.append(rec)
        if len(batch) >= 5000:
            yield batch
            batch = []
    if batch:
        yield batch
