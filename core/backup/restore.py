"""Restore: insert a verified backup's rows back into the table, skipping keys already present."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..config import Settings
from ..db import (
    LockedConnection,
    TableInfo,
    check_connection,
    describe_table,
    qualified,
    quote,
    table_identity,
)
from ..errors import BackupMismatch, RestoreError, RetentionError
from ..i18n import N_
from ..identity import TableIdentity
from ..models import RestoreResult
from ..partition_layout import recreate_for_restore
from ..timefmt import csv_to_sqlite, detect_sqlite_format
from .catalog import manifest_of, resolve_backup, verify_backup
from .csvfile import iter_records
from .manifest import manifest_path_for, source_of
from .record import record_restore
from .s3 import SCHEME
from .scan import PieceReader, ReadLimits, iter_decompressed
from .source import check_source
from .stored import fetch_stored

log = logging.getLogger(__name__)


def restore_backup(settings: Settings, name: str | Path, *, allow_unsigned: bool = False,
                   force_other_source: bool = False, trigger: str = "cli") -> RestoreResult:
    """Restore a backup of BACKUP_DIR, or a stored one by its ``s3://`` URL (fetched, verified, then removed).

    A backup of another database or table (its manifest's ``source``) is refused unless
    ``force_other_source``. A finished restore is recorded in the history (status ``restored``).
    """
    opts = {"allow_unsigned": allow_unsigned, "force": force_other_source, "trigger": trigger}
    if not str(name).startswith(SCHEME):
        return _restore_local(settings, name, **opts)
    path = fetch_stored(settings, str(name))
    try:
        return _restore_local(settings, path, **opts)
    finally:
        for p in (path, manifest_path_for(path)):
            p.unlink(missing_ok=True)


def _restore_local(settings: Settings, name: str | Path, *, allow_unsigned: bool, force: bool,
                   trigger: str) -> RestoreResult:
    """Insert a backup's rows back into the table; rows whose key is present are skipped.

    The backup is verified first (its manifest's signature too, with BACKUP_SIGNING_KEY; an
    unsigned one only with ``allow_unsigned``), must be of this table with the same columns,
    and is read within the limits its rows allow, its sha256 checked again before COMMIT.
    Runs in one transaction, holding the cleanup lock: on any error the table is
    unchanged. Raises BackupNotFound, BackupMismatch, RestoreError, LockHeld.
    """
    t0 = time.monotonic()
    path = resolve_backup(settings, name)
    m = manifest_of(path)
    engine = check_connection(settings)
    info = describe_table(settings, engine)
    check_source(path.name, m.get("source"), source_of(settings.database_url, info), force=force)
    if not force and not _same_table(str(m.get("table")), table_identity(settings, engine)):
        raise RestoreError(N_("{name} is a backup of {recorded}, not of {current}"), name=path.name,
                           recorded=repr(m.get("table")), current=repr(info.display_name))
    names = [c.get("name") for c in m.get("columns") or []]
    if names != info.column_names:
        raise RestoreError(N_("{name} has columns {names}, the table has {columns}"), name=path.name, names=names,
                           columns=info.column_names)
    if m.get("primary_key") != info.manifest_key:
        raise RestoreError(f"{path.name} is keyed on {m.get('primary_key')!r}, the table on {info.manifest_key!r}")
    v = verify_backup(settings, path, allow_unsigned=allow_unsigned)
    if not v.ok:
        raise BackupMismatch(str(path), "the backup", "matching its manifest", v.problem)
    # Restores and cleanups exclude each other: a cleanup running meanwhile could
    # archive restored rows a second time.
    locked = LockedConnection(settings, engine)
    try:
        locked.lock()
        insert = _restore_pg if info.dialect == "postgresql" else _restore_sqlite
        restored = insert(engine, locked.dbapi, info, (path, m))
    finally:
        locked.close()
    result = RestoreResult(str(path), info.display_name, v.rows, restored, v.rows - restored,
                           round(time.monotonic() - t0, 3))
    log.info("restored %d rows of %s into %s (%d already present)", restored, path.name, info.display_name,
             result.rows_skipped)
    record_restore(settings, engine, result, source=m.get("source"), trigger=trigger)
    return result


def _same_table(recorded: str, ident: TableIdentity) -> bool:
    """Whether a manifest's table name, however it was spelled (``public.`` or not; letter case
    on SQLite), names the table the server resolved now."""
    if ident.schema is None:
        return recorded.lower() == ident.name.lower()
    return recorded == ident.key or ("." not in recorded and recorded == ident.name)


def _written(engine: Any, info: TableInfo) -> str:
    """The columns a restore writes: all but generated ones (the database computes those again)."""
    return ", ".join(quote(engine, c.name) for c in info.columns if not c.generated)


def _conflict(engine: Any, info: TableInfo) -> str:
    return f"ON CONFLICT ({', '.join(quote(engine, k) for k in info.key)}) DO NOTHING"


def _restore_pg(engine: Any, conn: Any, info: TableInfo, backup: tuple[Path, dict[str, Any]]) -> int:
    path, m = backup
    table = qualified(engine, info.schema, info.name)
    cols = ", ".join(quote(engine, c) for c in info.column_names)
    written = _written(engine, info)
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL TIME ZONE 'UTC'")
            for name in recreate_for_restore(cur, table, m.get("partitions") or []):
                log.info("recreated partition %s from the backup's manifest", name)
            cur.execute(f"CREATE TEMP TABLE _retention_restore (LIKE {table}) ON COMMIT DROP")
            f = PieceReader(iter_decompressed(path, limits=ReadLimits.for_rows(m["rows"]), sha256=m["sha256"]))
            cur.copy_expert(
                f"COPY _retention_restore ({cols}) FROM STDIN WITH (FORMAT csv, HEADER true)", f, size=1 << 20
            )
            cur.execute(
                f"INSERT INTO {table} ({written}) OVERRIDING SYSTEM VALUE SELECT {written} FROM _retention_restore "
                f"{_conflict(engine, info)}"
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
        if isinstance(exc, RetentionError):
            raise RestoreError(f"{path.name}: {exc.one_line()}") from None
        raise RestoreError(f"{path.name}: {' '.join(str(getattr(exc, 'pgerror', None) or exc).split())}") from None


def _restore_sqlite(engine: Any, conn: Any, info: TableInfo, backup: tuple[Path, dict[str, Any]]) -> int:
    path, version = backup[0], int(backup[1].get("format_version") or 1)
    table = qualified(engine, info.schema, info.name)
    cols = _written(engine, info)
    marks = ", ".join("?" for c in info.columns if not c.generated)
    try:
        fmt = detect_sqlite_format(conn, table, quote(engine, info.timestamp_column), full=False)
        conn.execute("BEGIN IMMEDIATE")
        before = conn.total_changes
        sql = f"INSERT INTO {table} ({cols}) VALUES ({marks}) {_conflict(engine, info)}"
        for batch in _sqlite_batches(info, backup, fmt if version < 2 else None):
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


def _sqlite_batches(info: TableInfo, backup: tuple[Path, dict[str, Any]], fmt: Any) -> Any:
    """The backup's records as SQLite values, 5000 at a time, generated columns left out, read
    within the limits of the manifest's rows, the sha256 checked at the end.

    Format 2 (``fmt`` None): every value in the storage class it had. Format 1: text, but
    timestamps in the table's form and blobs as bytes.
    """
    path, m = backup
    ts_i = info.column_index(info.timestamp_column)
    blobs = [i for i, c in enumerate(info.columns) if c.is_blob]
    keep = [i for i, c in enumerate(info.columns) if not c.generated]
    records = iter_records(path, typed=fmt is None, limits=ReadLimits.for_rows(m["rows"]), sha256=m["sha256"])
    header = next(records, None)
    if header != info.column_names:
        raise RestoreError(f"{path.name}: header {header} does not match the table's columns")
    batch: list[list[Any]] = []
    for rec in records:
        if len(rec) != len(info.column_names):
            raise RestoreError(f"{path.name}: a record has {len(rec)} fields, expected {len(info.column_names)}")
        if fmt is not None:
            if rec[ts_i] is not None:
                rec[ts_i] = csv_to_sqlite(fmt, rec[ts_i])
            for i in blobs:
                if rec[i] is not None and rec[i].startswith("\\x"):
                    rec[i] = bytes.fromhex(rec[i][2:])
        batch.append(rec if len(keep) == len(rec) else [rec[i] for i in keep])
        if len(batch) >= 5000:
            yield batch
            batch = []
    if batch:
        yield batch
