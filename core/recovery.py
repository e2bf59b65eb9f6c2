"""Recovery: finish what a dead or failed run left, so the history never lies.

A run that died (kill -9, power loss) leaves its history row ``running``, a partial
backup, and, in the row, the journal of the batches that committed (``committed_bytes``,
``rows_deleted``). With the cleanup lock held, such a row is certainly dead: the
partial file is cut back to the journaled length, verified, named and described by
a manifest, and the row is marked ``interrupted`` (docs/design.md, "Recovery").
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from . import history
from .backup.finish import remove_partial
from .backup.manifest import build_manifest
from .backup.stored import Finished, FinishRequest, finish_anywhere, forget_unfinished
from .config import Settings
from .db import (
    TableInfo,
    check_connection,
    cleanup_running,
    describe_table,
    get_engine,
    qualified,
    quote,
    table_identity,
)
from .errors import RetentionError, map_exceptions
from .models import RunResult, RunStatus, utcnow
from .partition_layout import manifest_entries
from .timefmt import SqliteTsFormat, as_utc, detect_sqlite_format

log = logging.getLogger(__name__)


def recover_interrupted(
    settings: Settings, *, engine: Engine | None = None, info: TableInfo | None = None
) -> list[RunResult]:
    """Finish runs of this table that died: mark them interrupted, complete their backups.

    Also completes the backup of a run that ended with it unfinished (status kept).
    Must be called with the cleanup lock held (a 'running' row is then certainly
    dead). Side effects: truncates/renames partial backups, writes manifests,
    updates history. Returns the recovered runs.
    """
    engine = engine or get_engine(settings)
    info = info or describe_table(settings, engine)
    scope = history_scope(settings, engine, info)
    rows = history.list_runs(engine, info.schema, status=RunStatus.RUNNING, limit=1000, **scope)
    # Runs that ended (failed, or an earlier recovery) with the backup of rows they deleted
    # unfinished (e.g. the disk was full for the manifest): finish it now, keep their status.
    rows += [r for r in history.list_runs(engine, info.schema, limit=1000, **scope)
             if r["status"] != RunStatus.RUNNING and r.get("partial_file") and int(r["rows_deleted"] or 0) > 0]
    out = []
    for row in rows:
        status = RunStatus(row["status"])
        if status is not RunStatus.RUNNING:
            log.warning("run %s (%s) left the backup of its deleted rows unfinished; finishing it",
                        row["run_id"], status)
            error = (row.get("error") or f"the run {status}").split("; backup of ")[0]
            settle(settings, info, row, status=status, error=error)
        else:
            log.warning("found interrupted run %s (started %s); recovering it", row["run_id"], row["started_at"])
            settle(settings, info, row, status=RunStatus.INTERRUPTED, error="the run was interrupted")
        fresh = history.get_run(engine, info.schema, row["run_id"])
        out.append(history.row_to_result(fresh or row))
    return out


def settle(settings: Settings, info: TableInfo, row: dict[str, Any], *, status: RunStatus, error: str) -> None:
    """Bring a dead or failed run's backup and history row to a final, truthful state.

    A backup that cannot be finished is recorded in the row's error ("needs attention"),
    not raised. Raises DatabaseError-mapped SQLAlchemy errors when history cannot be written.
    """
    engine = get_engine(settings, bounded=True)  # a cleanup's step: CLEANUP_LOCK_TIMEOUT_MS bounds its waits
    run_id, rows = row["run_id"], int(row["rows_deleted"] or 0)
    if rows == 0:
        remove_partial(Path(row["partial_file"]) if row.get("partial_file") else None)
        forget_unfinished(settings, Path(row["backup_file"]) if row.get("backup_file") else None)
        history.update_run(
            engine, info.schema, run_id, status=status, finished_at=utcnow(), backup_file=None,
            manifest_file=None, partial_file=None, error=f"{error}; no row was deleted",
        )
        return
    fields = build_manifest(
        info, run_id=run_id, cutoff=as_utc(row["cutoff"]), span=(row.get("min_ts"), row.get("max_ts")),
        deflate=None, sqlite_format=_sqlite_format(engine, info), settings=settings,
    )
    entries = manifest_entries(engine, info.schema, run_id)
    if entries:
        fields["partitions"] = entries
    finished = _finish(settings, row, rows, fields)
    if isinstance(finished, str):
        log.error("run %s: %d deleted rows' backup needs attention: %s", run_id, rows, finished)
        history.update_run(engine, info.schema, run_id, status=status, finished_at=utcnow(),
                           error=f"{error}; backup of {rows} deleted rows needs attention: {finished}")
        return
    scan = finished.scan
    history.update_run(
        engine, info.schema, run_id, status=status, finished_at=utcnow(), rows_archived=rows, rows_deleted=rows,
        sha256=scan.sha256, backup_bytes=scan.size_bytes, backup_file=finished.data and str(finished.data),
        manifest_file=finished.manifest and str(finished.manifest), backup_url=finished.url, partial_file=None, error=f"{error}; the backup of the {rows} rows it deleted was completed and verified",
    )
    log.info("run %s: backup %s of %d deleted rows completed and verified", run_id,
             finished.url or Path(row["backup_file"]).name, rows)


def _finish(settings: Settings, row: dict[str, Any], rows: int, fields: dict[str, Any]) -> Finished | str:
    """Finish the run's backup from its journal: (data, manifest, scan), or the problem on one line."""
    if not (row.get("partial_file") and row.get("backup_file")):
        return "the run's history row names no backup file"
    try:
        with map_exceptions():
            return finish_anywhere(settings, FinishRequest(
                partial=Path(row["partial_file"]), final=Path(row["backup_file"]),
                committed_bytes=int(row["committed_bytes"]), rows=rows, manifest_fields=fields))
    except RetentionError as exc:
        return exc.one_line()


def _sqlite_format(engine: Engine, info: TableInfo) -> SqliteTsFormat | None:
    """The table's SQLite timestamp form, recorded in the manifest for restore (the default if unreadable)."""
    if info.dialect != "sqlite":
        return None
    try:
        with map_exceptions(), engine.connect() as c:
            return detect_sqlite_format(c.connection.driver_connection, qualified(engine, info.schema, info.name),
                                        quote(engine, info.timestamp_column), full=False)
    except RetentionError:
        return SqliteTsFormat()


def history_scope(settings: Settings, engine: Engine, info: TableInfo | None = None) -> dict[str, Any]:
    """``list_runs`` arguments selecting this table's runs under every spelling (core.identity).

    Rows written before the ``table_key`` column existed match by the name they were
    recorded under: the settings' spelling, or the canonical one. Reads only.
    """
    ident = table_identity(settings, engine)
    names = {settings.table, ident.key, info.display_name if info else settings.table}
    if ident.schema in (None, "public"):
        names.add(ident.name)
    return {"table_name": tuple(sorted(names)), "table_key": ident.key}


def list_history(settings: Settings, *, limit: int = 100) -> list[RunResult]:
    """Past runs of the table (under every spelling of its name), newest first. Read-only.

    Never writes: a run still marked 'running' while nobody holds the cleanup lock died;
    it is shown with ``awaiting_recovery`` set, and the next cleanup (which holds the
    lock) recovers it. Never creates or migrates the history table. Raises
    DatabaseUnavailable, BadSetting.
    """
    engine = check_connection(settings)
    scope = history_scope(settings, engine)
    free_before = not cleanup_running(settings)
    rows = history.list_runs(engine, settings.table_parts[0], limit=limit, **scope)
    dead = free_before and any(r["status"] == RunStatus.RUNNING for r in rows) and not cleanup_running(settings)
    results = [history.row_to_result(r) for r in rows]
    return [dataclasses.replace(r, awaiting_recovery=True) if dead and r.status is RunStatus.RUNNING else r
            for r in results]


def get_run_result(settings: Settings, run_id: str) -> RunResult | None:
    """One run by id (as ``run --json`` prints it), or None. Read-only."""
    engine = check_connection(settings)
    row = history.get_run(engine, settings.table_parts[0], run_id)
    return history.row_to_result(row) if row else None
