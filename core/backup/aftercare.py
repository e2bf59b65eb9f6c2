"""What follows every cleanup, under its lock: expire old backups, copy backups to Google Drive.

Neither can fail the run; what each did comes back as notes for the run's report (Slack,
history, the run's JSON): the backups that expired, the Drive copies made or failed.
"""

from __future__ import annotations

from typing import Any

from .drivecopy import copy_missing
from .expiry import ExpiryResult, expire_after_run


def expiry_notes(result: ExpiryResult | None) -> tuple[str, ...]:
    if result is None or not result.expired:
        return ()
    names = ", ".join(e.name for e in result.expired)
    return (f"backups expired (BACKUP_RETENTION_DAYS={result.retention_days}), removed everywhere: {names}",)


def after_run(settings: Any) -> tuple[str, ...]:
    """Expire what is due, then copy what Drive lacks; the notes saying what happened."""
    return expiry_notes(expire_after_run(settings)) + copy_missing(settings).notes()
