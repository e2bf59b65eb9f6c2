"""Naming, finishing and recovering backup files of a run.

``finish_backup`` is used both at the end of a normal run and by crash recovery:
it cuts the data file back to the length the database journal recorded, checks
it, gives it its final name (never overwriting) and writes the manifest.
"""

from __future__ import annotations

import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from .archive import (
    DATA_SUFFIX,
    FORMAT_VERSION,
    PARTIAL_SUFFIX,
    Scan,
    fsync_dir,
    manifest_path_for,
    scan_file,
    write_json_atomic,
)
from .config import Settings
from .db import TableInfo
from .errors import BackupMismatch, BadSetting
from .models import to_jsonable, utcnow
from .timefmt import SqliteTsFormat, as_utc

log = logging.getLogger(__name__)


def prepare_backup_dir(settings: Settings) -> Path:
    """Create BACKUP_DIR if needed and prove it writable. Raises BadSetting."""
    path = Path(settings.backup_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BadSetting("BACKUP_DIR", str(path), f"is not a writable folder ({exc.strerror})") from None
    return path.resolve()


def backup_names(backup_dir: Path, table: str, run_id: str, when: datetime) -> tuple[Path, Path, Path]:
    """(final data path, partial path, manifest path) for a run; unique per run id."""
    stem = f"{table}_{as_utc(when).strftime('%Y%m%dT%H%M%SZ')}_{run_id[:8]}"
    final = backup_dir / (stem + DATA_SUFFIX)
    return final, final.with_name(final.name + PARTIAL_SUFFIX), manifest_path_for(final)


def build_manifest(
    *,
    info: TableInfo,
    run_id: str,
    cutoff: datetime,
    min_ts: datetime | None,
    max_ts: datetime | None,
    gzip_level: int,
    deflate: str | None,
    sqlite_format: SqliteTsFormat | None,
    database: str,
) -> dict[str, Any]:
    return to_jsonable(
        {
            "format_version": FORMAT_VERSION,
            "run_id": run_id,
            "table": info.display_name,
            "timestamp_column": info.timestamp_column,
            "primary_key": info.primary_key,
            "columns": [{"name": c.name, "type": c.type} for c in info.columns],
            "cutoff": cutoff,
            "rows": None,  # filled in by finish_backup from the verified file
            "sha256": None,
            "size_bytes": None,
            "min_timestamp": min_ts,
            "max_timestamp": max_ts,
            "created_at": utcnow(),
            "dialect": info.dialect,
            "database": database,
            # deflate: the library that compressed ("isal 1.9.1", "zlib 1.2.13"); None after a recovery
            "compression": {"format": "gzip", "level": gzip_level, "deflate": deflate, "members": "one per batch"},
            "csv": {"header": True, "null": "empty unquoted field", "encoding": "UTF-8"},
            "sqlite_timestamp_format": sqlite_format.name if sqlite_format else None,
        }
    )


def cut_to(path: Path, length: int) -> None:
    """Truncate ``path`` to ``length`` bytes durably (drops an uncommitted batch)."""
    with open(path, "r+b") as f:
        f.truncate(length)
        f.flush()
        os.fsync(f.fileno())


def finish_backup(
    *,
    partial: Path,
    final: Path,
    committed_bytes: int,
    expected_rows: int,
    expected_sha256: str | None,
    manifest_fields: dict[str, Any],
) -> tuple[Path, Path, Scan]:
    """Cut, verify, name and describe a backup whose rows are deleted.

    Idempotent: resumes wherever a previous attempt stopped (partial present, final
    present without manifest, or both present). Raises BackupMismatch if the bytes on
    disk do not hold exactly the journaled rows; the file is then left where it is.
    """
    manifest = manifest_path_for(final)
    data = final if final.exists() else partial
    if not data.exists():
        raise BackupMismatch(str(final), "the backup file", "present", "missing")
    size = data.stat().st_size
    if size < committed_bytes:
        raise BackupMismatch(str(data), "length", committed_bytes, size)
    if size > committed_bytes:
        log.info("cutting %s back to %d bytes (an uncommitted batch)", data.name, committed_bytes)
        cut_to(data, committed_bytes)
    scan = scan_file(data)
    if not scan.complete:
        raise BackupMismatch(str(data), "the file", "complete", scan.problem)
    if scan.rows != expected_rows:
        raise BackupMismatch(str(data), "row count", expected_rows, scan.rows)
    if expected_sha256 and scan.sha256 != expected_sha256:
        raise BackupMismatch(str(data), "sha256", expected_sha256, scan.sha256)
    # The manifest first: if it cannot be written (disk full), no .csv.gz without one appears.
    write_json_atomic(manifest, {**manifest_fields, "rows": scan.rows, "sha256": scan.sha256,
                                 "size_bytes": scan.size_bytes}, overwrite=True)
    if data == partial:
        os.link(partial, final)  # FileExistsError instead of overwriting anything
        os.unlink(partial)
        fsync_dir(final.parent)
    return final, manifest, scan


def remove_partial(partial: Path | None) -> None:
    """Delete a partial file that holds no deleted row (its rows are all still in the table)."""
    if partial and partial.exists() and partial.name.endswith(PARTIAL_SUFFIX):
        partial.unlink()
        fsync_dir(partial.parent)
