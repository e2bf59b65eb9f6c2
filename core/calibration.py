"""Backup size from experience: the bytes per row of this table's past backups.

The first estimate of a table comes from a sample of its oldest rows and a measured
compression ratio (:func:`core.stats.estimate_backup_bytes`); once runs have written
backups, their real size per row is the better guide (same data, same gzip level).
"""

from __future__ import annotations

from typing import Any

from . import history
from .models import RunStatus

RECENT_RUNS = 20
MIN_ROWS = 100  # fewer archived rows than this say little about the next backup


def bytes_per_row(settings: Any, engine: Any) -> float | None:
    """Compressed backup bytes per archived row over the table's recent successful runs, or None."""
    rows = size = 0
    schema, name = settings.table_parts
    for run in history.list_runs(engine, schema, (settings.table, name), limit=RECENT_RUNS,
                                 status=RunStatus.SUCCESS):
        if run.get("backup_bytes") and run.get("rows_archived"):
            rows += int(run["rows_archived"])
            size += int(run["backup_bytes"])
    return size / rows if rows >= MIN_ROWS else None
