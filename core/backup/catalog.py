"""The backups users see: resolve a name safely, list, verify, export for spreadsheets.

A name from the CLI, the dashboard or a URL is resolved inside BACKUP_DIR only:
anything that escapes it (``..``, absolute paths elsewhere, symlinks out) is refused.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import BackupMismatch, BackupNotFound
from ..models import BackupInfo, VerifyResult
from ..timefmt import parse_db_timestamp
from .csvfile import iter_records
from .manifest import (
    DATA_SUFFIX,
    MANIFEST_SUFFIX,
    check_scan,
    data_name_for,
    manifest_path_for,
    read_manifest,
)
from .scan import scan_file
from .store import LocalFolderStore
from .stored import merge_stored

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
    store = LocalFolderStore(Path(settings.backup_dir).expanduser())
    out = []
    for name in store.list(MANIFEST_SUFFIX):
        manifest, data = store.path(name), store.path(data_name_for(name))
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
                locations=({"kind": "local", "where": str(data.resolve()),
                            "verified": size == m.get("size_bytes", size)},),
            )
        )
    out = merge_stored(settings, out)
    out.sort(key=lambda b: (b.created_at is not None, b.created_at), reverse=True)
    return out


def manifest_of(path: Path) -> dict[str, Any]:
    """The manifest beside a data file. Raises BackupNotFound (none), BackupMismatch (unreadable)."""
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
    m = manifest_of(path)
    scan = scan_file(path)
    problem = None
    try:
        check_scan(path, scan, rows=m.get("rows"), sha256=str(m.get("sha256")))
    except BackupMismatch as exc:
        problem = exc.problem
    return VerifyResult(problem is None, str(path), scan.rows, scan.sha256, int(m.get("rows") or 0),
                        str(m.get("sha256")), problem)


def iter_spreadsheet_safe(settings: Settings, name: str | Path) -> Iterator[bytes]:
    """Stream the backup as plain CSV with formula-like cells neutralised for Excel.

    Cells starting with = + - @, tab or CR get a leading apostrophe. The backup file
    itself is not changed. Raises BackupNotFound, BackupReadError.
    """
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
