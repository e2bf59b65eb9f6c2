"""The backups users see: resolve a name safely, list, verify, export for spreadsheets.

A name from the CLI, the dashboard or a URL is resolved inside BACKUP_DIR only:
anything that escapes it (``..``, absolute paths elsewhere, symlinks out) is refused.
"""

from __future__ import annotations

import csv
import errno
import io
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import BackupMismatch, BackupNotFound, BadManifest
from ..i18n import N_
from ..masking import redact
from ..models import BackupInfo, VerifyResult
from ..timefmt import parse_db_timestamp
from .csvfile import iter_records
from .gdrive import merge_drive
from .manifest import (
    DATA_SUFFIX,
    MANIFEST_SUFFIX,
    PARTIAL_SUFFIX,
    check_scan,
    data_name_for,
    manifest_path_for,
    read_manifest,
)
from .scan import ReadLimits, Scan, scan_file
from .signing import signature_problem
from .store import LocalFolderStore
from .stored import merge_stored

log = logging.getLogger(__name__)


def resolve_backup(settings: Settings, name: str | Path) -> Path:
    """The data file ``name`` inside BACKUP_DIR, or BackupNotFound. Reads nothing."""
    base = Path(settings.backup_dir).expanduser().resolve()
    raw = str(name)
    if not raw or "\x00" in raw:
        raise BackupNotFound(raw, N_("empty or invalid name"))
    candidate = Path(raw).expanduser()
    if not candidate.is_absolute():
        # a bare name or a path relative to the working directory / BACKUP_DIR
        candidate = candidate if candidate.parent != Path(".") and candidate.exists() else base / candidate
    try:
        real = candidate.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise BackupNotFound(raw, N_("no such backup in {folder}"), folder=str(base)) from None
    if candidate.is_symlink() or (base / real.name).is_symlink():
        raise BackupNotFound(raw, N_("is a symbolic link; a backup must be a regular file in BACKUP_DIR"))
    if real.parent != base:
        raise BackupNotFound(raw, N_("is not a file directly inside BACKUP_DIR ({folder})"), folder=str(base))
    if not real.name.endswith(DATA_SUFFIX) or not real.is_file():
        raise BackupNotFound(raw, N_("is not a backup data file (*{suffix})"), suffix=DATA_SUFFIX)
    return real


def list_backups(settings: Settings) -> list[BackupInfo]:
    """Every backup with a manifest in BACKUP_DIR, newest first; a bad one as an entry with ``error``. Read-only."""
    store = LocalFolderStore(Path(settings.backup_dir).expanduser().resolve())
    out = []
    for name in store.list(MANIFEST_SUFFIX):
        manifest, data = store.path(name), store.path(data_name_for(name))
        if not os.path.lexists(data) and store.exists(data.name + PARTIAL_SUFFIX):
            continue  # a run is publishing it: the manifest is written just before the data file's name
        try:
            out.append(_listed(manifest, data))
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if manifest.is_symlink() or data.is_symlink():
                why = "a symbolic link; a backup and its manifest must be regular files"
            log.warning("backup %s: %s", name, why)
            out.append(BackupInfo(file=str(data), manifest_file=str(manifest), table="", rows=0, cutoff=None,
                                  created_at=None, size_bytes=0, sha256="", run_id=None, error=redact(why)))
    out = merge_drive(settings, merge_stored(settings, out))
    out.sort(key=lambda b: (b.created_at is not None, b.created_at), reverse=True)
    return out


def _listed(manifest: Path, data: Path) -> BackupInfo:
    """One listed backup. Raises OSError, ValueError (a bad manifest, a data file that is not a plain file)."""
    m = read_manifest(manifest)
    st = data.lstat()
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("the data file is not a regular file")
    return BackupInfo(
        file=str(data), manifest_file=str(manifest), table=m["table"], rows=m["rows"],
        cutoff=parse_db_timestamp(m.get("cutoff")), created_at=parse_db_timestamp(m.get("created_at")),
        size_bytes=st.st_size, sha256=m["sha256"], run_id=m.get("run_id"), source=m.get("source"),
        min_timestamp=parse_db_timestamp(m.get("min_timestamp")),
        max_timestamp=parse_db_timestamp(m.get("max_timestamp")),
        locations=({"kind": "local", "where": str(data), "verified": st.st_size == m.get("size_bytes", st.st_size)},),
    )


def manifest_of(path: Path) -> dict[str, Any]:
    """The manifest beside a data file, its fields checked. Raises BackupNotFound (none), BadManifest."""
    mpath = manifest_path_for(path)
    try:
        return read_manifest(mpath)
    except FileNotFoundError:
        raise BackupNotFound(path.name, N_("has no manifest beside it")) from None
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise BadManifest(str(mpath), why) from None
    except ValueError as exc:
        raise BadManifest(str(mpath), str(exc)) from None


def verify_backup(settings: Settings, name: str | Path, *, allow_unsigned: bool = False) -> VerifyResult:
    """Check the manifest's signature (with BACKUP_SIGNING_KEY), recompute sha256 and row count. Read-only.

    Raises BackupNotFound for a bad name or missing manifest, BadManifest for a malformed
    one; a mismatch (a signature refused included) is reported in the result (``ok``
    False, ``problem``), not raised. Reading stops at the limits the manifest's rows allow.
    """
    path = resolve_backup(settings, name)
    m = manifest_of(path)
    problem = signature_problem(m, settings.backup_signing_key, allow_unsigned=allow_unsigned)
    scan = Scan("", 0, 0, False, problem) if problem else scan_file(path, limits=ReadLimits.for_rows(m["rows"]))
    try:
        if problem is None:
            check_scan(path, scan, rows=m["rows"], sha256=m["sha256"])
    except BackupMismatch as exc:
        problem = exc.problem
    return VerifyResult(problem is None, str(path), scan.rows, scan.sha256, m["rows"], m["sha256"], problem)


def iter_spreadsheet_safe(settings: Settings, name: str | Path) -> Iterator[bytes]:
    """Stream the backup as plain CSV with formula-like cells neutralised for Excel.

    Cells starting with = + - @, tab or CR get a leading apostrophe. The backup file
    itself is not changed. The stream starts with a UTF-8 byte-order mark, so that Excel reads
    Korean text as UTF-8 rather than the system code page. Raises BackupNotFound, BadManifest,
    BackupReadError (BackupTooLarge over the limits its manifest's rows allow).
    """
    path = resolve_backup(settings, name)
    yield b"\xef\xbb\xbf"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    for record in iter_records(path, limits=ReadLimits.for_rows(manifest_of(path)["rows"])):
        writer.writerow(["" if v is None else ("'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v)
                         for v in record])
        if buf.tell() > 1 << 16:
            yield buf.getvalue().encode("utf-8")
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode("utf-8")
