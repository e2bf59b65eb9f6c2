"""Finishing a backup whose rows are deleted: cut it back to the journal, verify it, publish it.

Used both at the end of a normal run and by crash recovery; idempotent, so a
recovery resumes wherever an earlier attempt stopped.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..errors import BackupMismatch
from .manifest import PARTIAL_SUFFIX, check_scan, manifest_path_for, write_json_atomic
from .scan import ReadLimits, Scan, scan_file
from .signing import signed
from .store import LocalFolderStore
from .writer import fsync_dir

log = logging.getLogger(__name__)


def cut_to(path: Path, length: int) -> None:
    """Truncate ``path`` to ``length`` bytes durably (drops an uncommitted batch)."""
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)  # a symbolic link planted in its place is refused
    try:
        os.ftruncate(fd, length)
        os.fsync(fd)
    finally:
        os.close(fd)


def finish_backup(
    *,
    partial: Path,
    final: Path,
    committed_bytes: int,
    rows: int,
    sha256: str | None = None,
    known: Scan | None = None,
    manifest_fields: dict[str, Any],
    signing_key: str | None = None,
) -> tuple[Path, Path, Scan]:
    """Cut, verify, name and describe a backup whose rows are deleted; returns (data, manifest, scan).

    ``rows`` and ``sha256`` (None: not known, as in a recovery) are what the file must
    hold; ``known`` is what the run's writer verified (spares a second decompression);
    ``signing_key``: BACKUP_SIGNING_KEY, the manifest is signed with it.
    Idempotent: resumes wherever a previous attempt stopped (partial present, final
    present without manifest, or both present). Raises BackupMismatch if the bytes on
    disk do not hold exactly the journaled rows (the file is then left where it is),
    OSError from the file system.
    """
    store = LocalFolderStore(final.parent)
    manifest = manifest_path_for(final)
    data = final if store.exists(final.name) else partial
    if data.is_symlink():
        raise BackupMismatch(str(data), "the backup file", "a regular file", "a symbolic link")
    if not data.exists():
        raise BackupMismatch(str(final), "the backup file", "present", "missing")
    size = data.stat().st_size
    if size < committed_bytes:
        raise BackupMismatch(str(data), "length", committed_bytes, size)
    if size > committed_bytes:
        log.info("cutting %s back to %d bytes (an uncommitted batch)", data.name, committed_bytes)
        cut_to(data, committed_bytes)
    scan = scan_file(data, known=known, limits=ReadLimits.for_rows(rows))
    check_scan(data, scan, rows=rows, sha256=sha256)
    # The manifest first: if it cannot be written (disk full), no .csv.gz without one appears.
    fields = {**manifest_fields, "rows": scan.rows, "sha256": scan.sha256, "size_bytes": scan.size_bytes}
    write_json_atomic(manifest, signed(fields, signing_key), overwrite=True)
    if data == partial:
        store.put(final.name, partial)
    return final, manifest, scan


def remove_partial(partial: Path | None) -> None:
    """Delete a partial file that holds no deleted row (its rows are all still in the table)."""
    if partial and partial.exists() and partial.name.endswith(PARTIAL_SUFFIX):
        partial.unlink()
        fsync_dir(partial.parent)
