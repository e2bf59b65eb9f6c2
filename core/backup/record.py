"""A restore in the history: one row per restore, written after its transaction committed."""

from __future__ import annotations

import getpass
import logging
import socket
import uuid
from typing import Any

from .. import history
from ..models import NotifyStatus, RestoreResult, RunStatus, Trigger, utcnow
from .source import source_msg

log = logging.getLogger(__name__)


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def record_restore(settings: Any, engine: Any, r: RestoreResult, *, source: dict[str, Any] | None,
                   trigger: str) -> None:
    """History row (status ``restored``): rows restored in ``rows_matched``, rows skipped, who and where from.

    Written after the restore committed; a failure to write it is logged, never undoes the restore.
    """
    now = utcnow()
    started = now.timestamp() - r.duration_s
    note = (f"restored {r.rows_restored} of {r.rows_in_backup} rows from {r.file} ({source_msg(source).render()}); "
            f"{r.rows_skipped} already present and skipped; by {_who()}")
    try:
        history.insert_run(
            engine, settings.table_parts[0], run_id=str(uuid.uuid4()), table_name=r.table,
            trigger=Trigger(trigger), status=RunStatus.RESTORED, started_at=now.fromtimestamp(started, now.tzinfo),
            finished_at=now, cutoff=now, rows_archived=0, rows_deleted=0, rows_matched=r.rows_restored,
            rows_skipped=r.rows_skipped, backup_file=r.file, notification=NotifyStatus.SKIPPED, notes=note,
        )
    except Exception as exc:  # the restore committed; its record must not turn it into a failure
        log.error("the restore of %s is done but could not be recorded in the history: %s", r.file, exc)
