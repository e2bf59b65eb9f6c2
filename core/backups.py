"""Backups on disk: list, verify, restore, and safe resolution of names from users.

A name from the CLI, the dashboard or a URL is resolved inside BACKUP_DIR only:
anything that escapes it (``..``, absolute paths elsewhere, symlinks out) is refused.
"""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .archive import DATA_SUFFIX, manifest_path_for, read_manifest, scan_file
from .config import Settings
from .csvfile import iter_records
from .db import LockedConnection, TableInfo, check_connection, describe_table, quote
from .errors import BackupMismatch, BackupNotFound, RestoreError
from .models import BackupInfo, RestoreResult, VerifyResult
from .timefmt import csv_to_sqlite, detect_sqlite_format, parse_db_timestamp

log = logging.getLogger(__name__)


def resolve_backup(settings: Settings, name: str | Path) -> Path:
    """The data file ``name`` inside BACKUP_DIR, or BackupNotFound. Reads nothing."""
    base = Path(settings.backup_dir).expanduser().resolve()
    raw = str(name)
    if not raw or "\x00" in raw:
        raise BackupNotFound(raw, "empty or invalid name")
    candidate = Path(raw).expanduser()
    if not candidate.is_absolute():
        # a bare name or a path relative to the working directory / BACKUP_DIR
        candidate = candidate if candidate.parent != Path(".") and candidate.exists() else base / candidate
    try:
        real = candidate.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise BackupNotFound(raw, f"no such backup in {base}") from None
    if real.parent != base:
        raise BackupNotFound(raw, f"is not a file directly inside BACKUP_DIR ({base})")
    if not real.name.endswith(DATA_SUFFIX) or not real.is_file():
        raise BackupNotFound(raw, f"is not a backup data file (*{DATA_SUFFIX})")
    return real


def list_backups(settings: Settings) -> list[BackupInfo]:
    """Every backup with a manifest in BACKUP_DIR, newest first. Read-only."""
    base = Path(settings.backup_dir).expanduser()
    if not base.is_dir():
        return []
    out = []
    for manifest in base.glob("*.manifest.json"):
        data = manifest.with_name(manifest.name[: -len(".manifest.json")] + DATA_SUFFIX)
        try:
            m = read_manifest(manifest)
            size = data.stat().st_size
        except (OSError, ValueError) as exc:
            log.warning("skipping %s: %s", manifest.name, exc)
            continue
        out.append(
            BackupInfo(
                file=str(data.resolve()), manifest_file=str(manifest.resolve()), table=str(m.get("table")),
                rows=int(m.get("rows") or 0), cutoff=parse_db_timestamp(m.get("cutoff")),
                created_at=parse_db_timestamp(m.get("created_at")), size_bytes=size,
                sha256=str(m.get("sha256")), run_id=m.get("run_id"),
                min_timestamp=parse_db_timestamp(m.get("min_timestamp")),
                max_timestamp=parse_db_timestamp(m.get("max_timestamp")),
            )
        )
    out.sort(key=lambda b: (b.created_at is not None, b.created_at), reverse=True)
    return out


def _manifest_for(path: Path) -> dict[str, Any]:
    mpath = manifest_path_for(path)
    try:
        return read_manifest(mpath)
    except FileNotFoundError:
        raise BackupNotFound(path.name, "has no manifest beside it") from None
    except (OSError, ValueError) as exc:
        raise BackupMismatch(str(mpath), "the manifest", "valid JSON", str(exc)) from None


def verify_backup(settings: Settings, name: str | Path) -> VerifyResult:
    """Recompute sha256 and row count and compare with the manifest. Read-only.

    Raises BackupNotFound for a bad name or missing manifest; a mismatch is
    reported in the result (``ok`` False, ``problem``), not raised.
    """
    path = resolve_backup(settings, name)
    m = _manifest_for(path)
    scan = scan_file(path)
    problem = None
    if not scan.complete:
        problem = scan.problem
    elif scan.sha256 != m.get("sha256"):
        problem = "sha256 differs from the manifest"
    elif scan.rows != m.get("rows"):
        problem = f"{scan.rows} rows in the file, manifest says {m.get('rows')}"
    return VerifyResult(problem is None, str(path), scan.rows, scan.sha256, int(m.get("rows") or 0),
                        str(m.get("sha256")), problem)


def iter_spreadsheet_safe(settings: Settings, name: str | Path) -> Iterator[bytes]:
    """Stream the backup as plain CSV with formula-like cells neutralised for Excel.

    Cells starting with = + - @, tab or CR get a leading apostrophe. The backup file
    itself is not changed. Raises BackupNotFound.
    """
    import csv
    import io

    path = resolve_backup(settings, name)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    for record in iter_records(path):
        writer.writerow(["" if v is None else ("'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v)
                         for v in record])
        if buf.tell() > 1 << 16:
            yield buf.getvalue().encode("utf-8")
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode("utf-8")


def restore_backup(settings: Settings, name: str | Path) -> RestoreResult:
    """Insert a backup's rows back into the table; rows whose key is present are skipped.

    The backup is verified first and must be of this table with the same columns.
    Runs in one transaction, holding the cleanup lock: on any error the table is
    unchanged. Raises BackupNotFound, BackupMismatch, RestoreError, LockHeld.
    """
    t0 = time.monotonic()
    path = resolve_backup(settings, name)
    m = _manifest_for(path)
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
            restored = _restore_pg(engine, locked.dbapi, info, path)
        else:
            restored = _restore_sqlite(engine, locked.dbapi, info, path)
    finally:
        locked.close()
    result = RestoreResult(str(path), info.display_name, v.rows, restored, v.rows - restored,
                           round(time.monotonic() - t0, 3))
    log.info("restored %d rows of %s into %s (%d already present)", restored, path.name, info.display_name,
             result.rows_skipped)
    return result


def _restore_pg(engine: Any, conn: Any, info: TableInfo, path: Path) -> int:
    q = lambda n: quote(engine, n)  # noqa: E731
    table = f"{q(info.schema)}.{q(info.name)}" if info.schema else q(info.name)
    cols = ", ".join(q(c) for c in info.column_names)
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL TIME ZONE 'UTC'")
            cur.execute(f"CREATE TEMP TABLE _retention_restore (LIKE {table}) ON COMMIT DROP")
            with gzip.open(path, "rb") as f:
                cur.copy_expert(
                    f"COPY _retention_restore ({cols}) FROM STDIN WITH (FORMAT csv, HEADER true)", f, size=1 << 20
                )
            cur.execute(
                f"INSERT INTO {table} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM _retention_restore "
                f"ON CONFLICT ({q(info.primary_key)}) DO NOTHING"
            )
            restored = cur.rowcount
        conn.commit()
        return int(restored)
    except Exception as exc:
        conn.rollback()
        if isinstance(exc, (OSError, ValueError, EOFError)):
            raise RestoreError(f"{path.name}: {exc}") from None
        raise RestoreError(f"{path.name}: {' '.join(str(getattr(exc, 'pgerror', None) or exc).split())}") from None


def _restore_sqlite(engine: Any, conn: Any, info: TableInfo, path: Path) -> int:
    q = lambda n: quote(engine, n)  # noqa: E731
    table = q(info.name)
    cols = ", ".join(q(c) for c in info.column_names)
    marks = ", ".join("?" for _ in info.column_names)
    ts_i = info.column_index(info.timestamp_column)
    blobs = [i for i, c in enumerate(info.columns) if c.is_blob]
    try:
        fmt = detect_sqlite_format(conn, table, q(info.timestamp_column), full=False)
        conn.execute("BEGIN IMMEDIATE")
        before = conn.total_changes
        sql = f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT ({q(info.primary_key)}) DO NOTHING"
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
                conn.executemany(sql, batch)
                batch.clear()
        if batch:
            conn.executemany(sql, batch)
        restored = conn.total_changes - before
        conn.execute("COMMIT")
        return int(restored)
    except Exception as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, RestoreError):
            raise
        raise RestoreError(f"{path.name}: {' '.join(str(exc).split())}") from None
