"""Backups expire too (BACKUP_RETENTION_DAYS): a backup whose manifest ``created_at`` is older than N days is
deleted from every location it lives in (BACKUP_DIR, the object store), never the newest backup of a table.

Runs under the table's cleanup lock (after each cleanup, which holds it, or by
``python -m core expire-backups``); each expired backup is recorded in the history as
a row with status ``expired`` naming what was removed. The manifest goes before the
data everywhere, so a half-expired backup never looks final.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from .. import history
from ..db import LockedConnection, check_connection
from ..errors import map_exceptions
from ..models import NotifyStatus, RunStatus, Trigger, utcnow
from ..storeconf import backup_retention_days
from .catalog import list_backups
from .gdrive import Drive, remove_copy
from .manifest import manifest_path_for
from .s3 import S3Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Expired:
    """One backup past BACKUP_RETENTION_DAYS and where it was (or, in a dry run, would be) removed from."""

    name: str
    table: str
    created_at: Any
    rows: int
    removed_from: tuple[str, ...]


@dataclass(frozen=True)
class ExpiryResult:
    retention_days: int | None
    dry_run: bool
    expired: tuple[Expired, ...]
    kept_newest: tuple[str, ...]  # expired by age, kept as their table's newest backup


def due(settings: Any) -> tuple[list[Any], list[str]]:
    """(backups past the retention, names kept as their table's newest). Read-only."""
    days = backup_retention_days(settings)
    if days is None:
        return [], []
    limit = utcnow() - timedelta(days=days)
    backups = [b for b in list_backups(settings) if b.created_at is not None]
    newest: dict[str, Any] = {}
    for b in backups:
        if b.table not in newest or b.created_at > newest[b.table].created_at:
            newest[b.table] = b
    old = [b for b in backups if b.created_at < limit]
    return [b for b in old if newest[b.table] is not b], [b.name for b in old if newest[b.table] is b]


def expire_backups(settings: Any, *, dry_run: bool = False, locked: bool = False) -> ExpiryResult:
    """Delete expired backups everywhere (or list them, ``dry_run``). ``locked``: the caller holds the lock.

    Raises LockHeld when a cleanup of the table runs, StoreError, DatabaseUnavailable.
    """
    engine = check_connection(settings)
    conn = None
    if not (locked or dry_run):
        conn = LockedConnection(settings, engine)
        conn.lock()
    try:
        backups, kept = due(settings)
        out = tuple(_expire(settings, engine, b, dry_run) for b in backups)
    finally:
        if conn is not None:
            conn.close()
    return ExpiryResult(backup_retention_days(settings), dry_run, out, tuple(kept))


def _expire(settings: Any, engine: Any, b: Any, dry_run: bool) -> Expired:
    where = tuple(f"Google Drive file {loc['where']}" if loc["kind"] == "drive" else loc["where"]
                  for loc in b.locations)
    if dry_run:
        return Expired(b.name, b.table, b.created_at, b.rows, where)
    store = S3Store.from_settings(settings)
    drive = Drive.from_settings(settings) if any(loc["kind"] == "drive" for loc in b.locations) else None
    for loc in b.locations:
        if loc["kind"] == "local":
            data = Path(loc["where"])
            with map_exceptions():
                manifest_path_for(data).unlink(missing_ok=True)
                data.unlink(missing_ok=True)
        elif loc["kind"] == "store" and store is not None:
            store.delete(manifest_path_for(Path(b.name)).name)
            store.delete(b.name)
        elif loc["kind"] == "drive" and drive is not None:
            remove_copy(drive, b.name)
    now = utcnow()
    local = next((loc["where"] for loc in b.locations if loc["kind"] == "local"), None)
    url = next((loc["where"] for loc in b.locations if loc["kind"] == "store"), None)
    history.insert_run(
        engine, settings.table_parts[0], run_id=str(uuid.uuid4()), table_name=b.table, trigger=Trigger.CLI,
        status=RunStatus.EXPIRED, started_at=now, finished_at=now, cutoff=b.created_at, rows_archived=b.rows,
        rows_deleted=0, backup_file=local, backup_url=url, sha256=b.sha256, notification=NotifyStatus.SKIPPED,
        error=f"backup {b.name} expired (created {b.created_at.isoformat()}); removed from: {', '.join(where)}",
    )
    log.info("backup %s expired; removed from %s", b.name, ", ".join(where))
    return Expired(b.name, b.table, b.created_at, b.rows, where)


def expire_after_run(settings: Any) -> ExpiryResult | None:
    """After a cleanup, with its lock held: expire what is due; a failure is logged, never fails the run."""
    from ..errors import RetentionError

    if backup_retention_days(settings) is None:
        return None
    try:
        with map_exceptions():
            return expire_backups(settings, locked=True)
    except RetentionError as exc:
        log.error("expiring old backups failed: %s; the next run tries again", exc.one_line())
        return None
