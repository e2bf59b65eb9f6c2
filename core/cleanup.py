"""The cleanup routine: lock → recover → archive+delete in batches → verify → record → notify.

Every front end calls :func:`run_cleanup`. What it guarantees (SPEC.md invariants):
a row leaves the table only in a transaction that also records, in the run's
history row, the length of a fsynced backup file that holds that row's version; a
backup gets its final name only after it was read back and matched its journal.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from . import history
from .archive import MemberWriter
from .backup_files import (
    backup_names,
    build_manifest,
    finish_backup,
    prepare_backup_dir,
    remove_partial,
)
from .config import Settings
from .db import (
    LockedConnection,
    TableInfo,
    check_connection,
    describe_table,
    get_engine,
    quote,
)
from .deflate import codec_for
from .errors import BadSetting, CleanupFailed, LockHeld, RetentionError
from .models import Progress, RunResult, utcnow
from .notify import notify_run
from .purge import Journal, PostgresBatcher, SqliteBatcher
from .stats import preview
from .timefmt import SqliteTsFormat, as_utc, detect_sqlite_format, resolve_cutoff

log = logging.getLogger(__name__)

TRIGGERS = ("cli", "dashboard", "http", "test")


def run_cleanup(
    settings: Settings,
    *,
    cutoff: datetime | str | None = None,
    retention_days: int | None = None,
    dry_run: bool = False,
    notify: bool = True,
    batch_size: int | None = None,
    trigger: str = "cli",
    progress: Progress | None = None,
    run_id: str | None = None,
) -> RunResult:
    """Archive and delete the rows older than the cutoff; return what happened.

    Side effects: writes a backup and its manifest in BACKUP_DIR, deletes exactly
    the archived rows, records the run in ``retention_runs``, reports to Slack.
    Raises BadSetting / DatabaseUnavailable before anything is written, LockHeld
    when another cleanup of the table runs. Failures after the run started are
    returned as a RunResult with status ``failed`` (recorded in history).
    """
    started, t0 = utcnow(), time.monotonic()
    if batch_size is not None and not 1 <= batch_size <= 1_000_000:
        raise BadSetting("--batch-size", batch_size, "must be between 1 and 1000000")
    the_cutoff, engine, info, backup_dir = _prepare(settings, trigger, cutoff, retention_days, started)
    run_id = run_id or str(uuid.uuid4())
    schema = info.schema

    if dry_run:
        p = preview(settings, cutoff=the_cutoff, engine=engine, info=info)
        result = _result(run_id, "dry_run", info, the_cutoff, trigger, started, t0, rows_matched=p.rows_to_delete,
                         notification="skipped")
        history.insert_run(engine, schema, **_row_values(result))
        log.info("dry run: %d rows of %s older than %s", p.rows_to_delete, info.display_name, the_cutoff)
        return result

    conn = _lock(settings, engine)
    return _locked_run(settings, conn, engine, info, backup_dir, run_id, the_cutoff, trigger, started, t0,
                       batch_size or settings.batch_size, progress, notify)


def start_cleanup(
    settings: Settings,
    *,
    trigger: str = "http",
    cutoff: datetime | str | None = None,
    retention_days: int | None = None,
    notify: bool = True,
    on_done: Callable[[RunResult | BaseException], None] | None = None,
) -> str:
    """Take the lock now, run the cleanup in a background thread, return its run id at once.

    Raises (synchronously, nothing changed) what run_cleanup raises before it
    starts: BadSetting, DatabaseUnavailable, LockHeld. ``on_done`` receives the
    RunResult, or the exception of a run that crashed.
    """
    started, t0 = utcnow(), time.monotonic()
    the_cutoff, engine, info, backup_dir = _prepare(settings, trigger, cutoff, retention_days, started)
    run_id = str(uuid.uuid4())
    conn = _lock(settings, engine)

    def work() -> None:
        try:
            result: RunResult | BaseException = _locked_run(
                settings, conn, engine, info, backup_dir, run_id, the_cutoff, trigger, started, t0,
                settings.batch_size, None, notify,
            )
        except BaseException as exc:  # reported to on_done; the history row says the rest
            log.error("background cleanup %s crashed: %s", run_id, _describe(exc))
            result = exc
        if on_done:
            on_done(result)

    threading.Thread(target=work, name=f"cleanup-{run_id[:8]}", daemon=True).start()
    return run_id


def _prepare(
    settings: Settings, trigger: str, cutoff: datetime | str | None, retention_days: int | None, now: datetime,
) -> tuple[datetime, Engine, TableInfo, Path]:
    """Validate everything a run needs before it writes anything (BadSetting, DatabaseUnavailable)."""
    if trigger not in TRIGGERS:
        raise BadSetting("trigger", trigger, f"must be one of {', '.join(TRIGGERS)}")
    the_cutoff = resolve_cutoff(
        retention_days=retention_days, cutoff=cutoff, default_days=settings.retention_days, now=now
    )
    engine = check_connection(settings)
    info = describe_table(settings, engine)
    return the_cutoff, engine, info, prepare_backup_dir(settings)


def _lock(settings: Settings, engine: Engine) -> LockedConnection:
    """A connection holding the table's cleanup lock, or LockHeld."""
    conn = LockedConnection(settings, engine)
    try:
        conn.lock()
    except BaseException:
        conn.close()
        raise
    return conn


def _locked_run(
    settings: Settings, conn: LockedConnection, engine: Engine, info: TableInfo, backup_dir: Path, run_id: str,
    cutoff: datetime, trigger: str, started: datetime, t0: float, batch_size: int, progress: Progress | None,
    notify: bool,
) -> RunResult:
    """The run proper, with the lock held by ``conn``; releases it before notifying."""
    schema = info.schema
    try:
        history.ensure_history(engine, schema)
        recovered = recover_interrupted(settings, engine=engine, info=info)
        result = _archive_and_delete(
            settings, conn, engine, info, backup_dir, run_id, cutoff, trigger, started, t0, batch_size, progress,
        )
    except SQLAlchemyError as exc:  # outside a batch (a batch's failure is recorded): disk full, connection lost
        raise CleanupFailed(f"cleanup of {info.display_name} stopped: database error: {_describe(exc)}; "
                            "the next run recovers anything unfinished", run_id=run_id) from None
    finally:
        conn.close()
    result = _replace(result, recovered_runs=tuple(r.run_id for r in recovered))
    if notify:
        result = _notify(settings, engine, schema, result, recovered)
    else:
        history.update_run(engine, schema, result.run_id, notification="skipped")
        result = _replace(result, notification="skipped")
    return result


def _archive_and_delete(
    settings: Settings, conn: LockedConnection, engine: Engine, info: TableInfo, backup_dir: Path,
    run_id: str, cutoff: datetime, trigger: str, started: datetime, t0: float, batch_size: int,
    progress: Progress | None,
) -> RunResult:
    q = lambda name: quote(engine, name)  # noqa: E731
    fmt: SqliteTsFormat | None = None
    if info.dialect == "sqlite":
        table_sql = q(info.name)
        fmt = detect_sqlite_format(conn.dbapi, table_sql, q(info.timestamp_column), full=True)
        batcher: Any = SqliteBatcher(conn.dbapi, info, cutoff, batch_size, q, fmt=fmt)
    else:
        batcher = PostgresBatcher(conn.dbapi, info, cutoff, batch_size, q, reader=_second_connection(conn))
    total = batcher.count()
    if total == 0:
        result = _result(run_id, "nothing_to_do", info, cutoff, trigger, started, t0)
        history.insert_run(engine, info.schema, **_row_values(result))
        log.info("nothing to do: no row of %s is older than %s", info.display_name, cutoff.isoformat())
        return result

    final, partial, manifest = backup_names(backup_dir, info.display_name, run_id, started)
    history.insert_run(
        engine, info.schema, run_id=run_id, table_name=info.display_name, trigger=trigger, status="running",
        started_at=started, cutoff=cutoff, partial_file=str(partial), backup_file=str(final),
        manifest_file=str(manifest), pid=_pid(),
    )
    journal = Journal(run_id)
    manifest_fields = build_manifest(
        info=info, run_id=run_id, cutoff=cutoff, min_ts=None, max_ts=None, gzip_level=settings.gzip_level,
        deflate=codec_for(settings.gzip_level).library, sqlite_format=fmt, database=settings.database_url_masked,
    )
    writer: MemberWriter | None = None
    try:
        writer = MemberWriter(partial, settings.gzip_level)
        log.info("archiving %d rows of %s older than %s into %s", total, info.display_name,
                 cutoff.isoformat(), final.name)
        if progress:
            progress(0, total)
        while (done := batcher.run_batch(writer, journal.last_key, journal)) is not None:
            journal.add(done)
            log.info("batch %d: archived and deleted %d rows (%d so far)", journal.batches, done.rows, journal.rows)
            if progress:
                progress(journal.rows, max(total, journal.rows))
        writer.close()
        if journal.rows == 0:  # the rows went away between the count and the batches
            remove_partial(partial)
            history.update_run(engine, info.schema, run_id, status="nothing_to_do", finished_at=utcnow(),
                               backup_file=None, manifest_file=None, partial_file=None)
            return _result(run_id, "nothing_to_do", info, cutoff, trigger, started, t0)
        manifest_fields.update(min_timestamp=_iso(journal.min_ts), max_timestamp=_iso(journal.max_ts))
        final, manifest, scan = finish_backup(
            partial=partial, final=final, committed_bytes=writer.size, expected_rows=journal.rows,
            expected_sha256=writer.sha.hexdigest(), manifest_fields=manifest_fields,
        )
    except Exception as exc:
        if writer is not None:
            writer.close()
        message = exc.one_line() if isinstance(exc, RetentionError) else _describe(exc)
        log.error("cleanup of %s failed: %s", info.display_name, message)
        return _fail_run(settings, engine, info, run_id, cutoff, trigger, started, t0, message)
    finished = utcnow()
    history.update_run(
        engine, info.schema, run_id, status="success", finished_at=finished, rows_archived=journal.rows,
        rows_deleted=journal.rows, sha256=scan.sha256, backup_bytes=scan.size_bytes, partial_file=None,
        backup_file=str(final), manifest_file=str(manifest),
    )
    log.info("archived and deleted %d rows of %s; backup %s (sha256 %s)", journal.rows, info.display_name,
             final.name, scan.sha256[:12])
    return _result(run_id, "success", info, cutoff, trigger, started, t0, rows=journal.rows, backup=str(final),
                   manifest=str(manifest), sha256=scan.sha256, backup_bytes=scan.size_bytes, finished=finished)


def _second_connection(conn: LockedConnection) -> Any | None:
    """A reader for the batches' COPY, or None (slower, one connection) when the server refuses one."""
    try:
        return conn.another()
    except SQLAlchemyError as exc:
        log.warning("no second database connection (%s); each batch copies, then deletes", _describe(exc))
        return None


def _fail_run(
    settings: Settings, engine: Engine, info: TableInfo, run_id: str, cutoff: datetime, trigger: str,
    started: datetime, t0: float, message: str,
) -> RunResult:
    """Record a failed run, finishing the backup of whatever batches did commit."""
    try:
        row = history.get_run(engine, info.schema, run_id)
        if row is not None:
            _settle(settings, info, row, status="failed", error=message)
            row = history.get_run(engine, info.schema, run_id) or row
            result = history.row_to_result(row)
            return _replace(result, duration_s=round(time.monotonic() - t0, 3))
    except Exception as exc:  # the database itself is gone: the next run recovers this one
        log.error("could not record the failure of run %s (%s); the next run will recover it", run_id,
                  _describe(exc))
    return _result(run_id, "failed", info, cutoff, trigger, started, t0, error=message)


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
    rows = history.list_runs(engine, info.schema, info.display_name, status="running", limit=1000)
    # Runs that ended (failed, or an earlier recovery) with the backup of rows they deleted
    # unfinished (e.g. the disk was full for the manifest): finish it now, keep their status.
    rows += [r for r in history.list_runs(engine, info.schema, info.display_name, limit=1000)
             if r["status"] != "running" and r.get("partial_file") and int(r["rows_deleted"] or 0) > 0]
    out = []
    for row in rows:
        if row["status"] != "running":
            log.warning("run %s (%s) left the backup of its deleted rows unfinished; finishing it",
                        row["run_id"], row["status"])
            error = (row.get("error") or f"the run {row['status']}").split("; backup of ")[0]
            _settle(settings, info, row, status=row["status"], error=error)
        else:
            log.warning("found interrupted run %s (started %s); recovering it", row["run_id"], row["started_at"])
            _settle(settings, info, row, status="interrupted", error="the run was interrupted")
        fresh = history.get_run(engine, info.schema, row["run_id"])
        out.append(history.row_to_result(fresh or row))
    return out


def _settle(settings: Settings, info: TableInfo, row: dict[str, Any], *, status: str, error: str) -> None:
    """Bring a dead or failed run's backup and history row to a final, truthful state."""
    engine = get_engine(settings)
    run_id, rows = row["run_id"], int(row["rows_deleted"] or 0)
    partial = Path(row["partial_file"]) if row.get("partial_file") else None
    final = Path(row["backup_file"]) if row.get("backup_file") else None
    if rows == 0:
        remove_partial(partial)
        history.update_run(
            engine, info.schema, run_id, status=status, finished_at=utcnow(), backup_file=None,
            manifest_file=None, partial_file=None, error=f"{error}; no row was deleted",
        )
        return
    fmt = None
    if info.dialect == "sqlite":
        fmt = SqliteTsFormat()  # the form is recorded in the manifest for restore
        try:
            with engine.connect() as c:
                fmt = detect_sqlite_format(c.connection.driver_connection, quote(engine, info.name),
                                           quote(engine, info.timestamp_column), full=False)
        except RetentionError:
            pass
    fields = build_manifest(
        info=info, run_id=run_id, cutoff=as_utc(row["cutoff"]), min_ts=row.get("min_ts"),
        max_ts=row.get("max_ts"), gzip_level=settings.gzip_level, deflate=None, sqlite_format=fmt,
        database=settings.database_url_masked,
    )
    try:
        assert final is not None and partial is not None
        final, manifest, scan = finish_backup(
            partial=partial, final=final, committed_bytes=int(row["committed_bytes"]), expected_rows=rows,
            expected_sha256=None, manifest_fields=fields,
        )
    except (RetentionError, OSError, AssertionError) as exc:
        problem = exc.one_line() if isinstance(exc, RetentionError) else _describe(exc)
        log.error("run %s: %d deleted rows' backup needs attention: %s", run_id, rows, problem)
        history.update_run(engine, info.schema, run_id, status=status, finished_at=utcnow(),
                           error=f"{error}; backup of {rows} deleted rows needs attention: {problem}")
        return
    history.update_run(
        engine, info.schema, run_id, status=status, finished_at=utcnow(), rows_archived=rows, rows_deleted=rows,
        sha256=scan.sha256, backup_bytes=scan.size_bytes, backup_file=str(final), manifest_file=str(manifest),
        partial_file=None, error=f"{error}; the backup of the {rows} rows it deleted was completed and verified",
    )
    log.info("run %s: backup %s of %d deleted rows completed and verified", run_id, final.name, rows)


def _notify(settings: Settings, engine: Engine, schema: str | None, result: RunResult,
            recovered: list[RunResult]) -> RunResult:
    outcome = notify_run(settings, result, recovered=recovered)
    try:
        history.update_run(engine, schema, result.run_id, notification=outcome.status,
                           notification_detail=outcome.detail)
    except Exception as exc:  # recording the outcome must not turn a cleanup into a failure
        log.error("could not record the notification outcome of run %s: %s", result.run_id, _describe(exc))
    return _replace(result, notification=outcome.status, notification_detail=outcome.detail)


# ---------------------------------------------------------------------------


def _result(
    run_id: str, status: str, info: TableInfo, cutoff: datetime, trigger: str, started: datetime, t0: float,
    *, rows: int = 0, backup: str | None = None, manifest: str | None = None, sha256: str | None = None,
    backup_bytes: int | None = None, finished: datetime | None = None, error: str | None = None,
    rows_matched: int | None = None, notification: str = "pending",
) -> RunResult:
    return RunResult(
        run_id=run_id, status=status, table=info.display_name, cutoff=cutoff, rows_archived=rows,
        rows_deleted=rows, backup_file=backup, manifest_file=manifest, sha256=sha256, notification=notification,
        duration_s=round(time.monotonic() - t0, 3), trigger=trigger, started_at=started,
        finished_at=finished or utcnow(), error=error, backup_bytes=backup_bytes,
        rows_matched=rows if rows_matched is None else rows_matched,
    )


def _row_values(r: RunResult) -> dict[str, Any]:
    return dict(
        run_id=r.run_id, table_name=r.table, trigger=r.trigger, status=r.status, started_at=r.started_at,
        finished_at=r.finished_at, cutoff=r.cutoff, rows_archived=r.rows_archived, rows_deleted=r.rows_deleted,
        backup_file=r.backup_file, manifest_file=r.manifest_file, sha256=r.sha256, notification=r.notification,
        error=r.error, pid=_pid(),
    )


def _replace(r: RunResult, **changes: Any) -> RunResult:
    import dataclasses

    return dataclasses.replace(r, **changes)


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value else None


def _pid() -> int:
    import os

    return os.getpid()


def _describe(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__




def list_history(settings: Settings, *, limit: int = 100) -> list[RunResult]:
    """Past runs of the table, newest first.

    A run still marked 'running' while nobody holds the cleanup lock died: it is
    recovered here (lock taken, backup completed, row marked interrupted), so the
    history never shows a dead run as running. Raises DatabaseUnavailable, BadSetting.
    """
    engine = check_connection(settings)
    schema = settings.table_parts[0]
    history.ensure_history(engine, schema)
    rows = history.list_runs(engine, schema, settings.table, limit=limit)
    if any(r["status"] == "running" for r in rows):
        conn = LockedConnection(settings, engine)
        try:
            conn.lock()
            recover_interrupted(settings, engine=engine)
            rows = history.list_runs(engine, schema, settings.table, limit=limit)
        except LockHeld:
            pass  # a cleanup really is running
        finally:
            conn.close()
    return [history.row_to_result(r) for r in rows]


def get_run_result(settings: Settings, run_id: str) -> RunResult | None:
    """One run by id (as ``run --json`` prints it), or None. Read-only."""
    engine = check_connection(settings)
    row = history.get_run(engine, settings.table_parts[0], run_id)
    return history.row_to_result(row) if row else None
