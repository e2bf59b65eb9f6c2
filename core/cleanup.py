"""The cleanup: the run object and the routine lock → recover → batches → verify → record → notify.

Every front end calls :func:`run_cleanup` (or :func:`core.runs.start_cleanup`, which runs
the same :class:`Run` in a thread). What it guarantees (docs/design.md, "Invariants"):
a row leaves the table only in a transaction that also records, in the run's history
row, the length of a fsynced backup file that holds that row's version; a backup gets
its final name only after it was read back and matched its journal.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from . import history, pacing, space
from .backup.aftercare import after_run
from .backup.deflate import codec_for
from .backup.finish import remove_partial
from .backup.manifest import backup_names, build_manifest
from .backup.store import LocalFolderStore
from .backup.stored import FinishRequest, StoreProbe, attach_segments, finish_anywhere
from .backup.writer import MemberWriter
from .batch_setup import batcher_for
from .batches import Journal
from .config import Settings
from .db import (
    LockedConnection,
    TableInfo,
    check_connection,
    describe_table,
    table_identity,
)
from .dependents import Dependents, run_notes, table_dependents
from .errors import (
    BadSetting,
    CleanupFailed,
    DatabaseError,
    DependentRowsRefused,
    LockTimeout,
    PermissionDenied,
    RetentionError,
    map_exceptions,
)
from .i18n import N_
from .identity import TableIdentity
from .models import NotifyStatus, Progress, RunResult, RunStatus, Trigger, utcnow
from .notify import notify_run
from .partitions import manifest_entries, partition_dropper
from .recovery import get_run_result, list_history, recover_interrupted, settle
from .shape import check_can_clean
from .stats import preview
from .timefmt import resolve_cutoff

log = logging.getLogger(__name__)

__all__ = ["CleanupRequest", "Run", "get_run_result", "list_history", "plan_run", "recover_interrupted",
           "run_cleanup"]


@dataclass(frozen=True)
class CleanupRequest:
    """What a caller asks for; :func:`plan_run` checks it and turns it into a :class:`Run`."""

    cutoff: datetime | str | None = None
    retention_days: int | None = None
    dry_run: bool = False
    notify: bool = True
    batch_size: int | None = None
    trigger: Trigger | str = Trigger.CLI
    progress: Progress | None = None
    max_runtime_s: float | None = None  # run --max-runtime: stop between batches, status partial


def run_cleanup(
    settings: Settings,
    *,
    cutoff: datetime | str | None = None,
    retention_days: int | None = None,
    dry_run: bool = False,
    notify: bool = True,
    batch_size: int | None = None,
    trigger: Trigger | str = Trigger.CLI,
    progress: Progress | None = None,
) -> RunResult:
    """Archive and delete the rows older than the cutoff; return what happened.

    Side effects: writes a backup and its manifest in BACKUP_DIR, deletes exactly
    the archived rows, records the run in ``retention_runs``, reports to Slack.
    Raises BadSetting / DatabaseUnavailable before anything is written, LockHeld
    when another cleanup of the table runs. Failures after the run started are
    returned as a RunResult with status ``failed`` (recorded in history).
    """
    return run_request(settings, request=CleanupRequest(
        cutoff=cutoff, retention_days=retention_days, dry_run=dry_run, notify=notify, batch_size=batch_size,
        trigger=trigger, progress=progress))


def run_request(settings: Settings, *, request: CleanupRequest) -> RunResult:
    """:func:`run_cleanup` for a whole CleanupRequest (``run --max-runtime`` among its options)."""
    run = plan_run(settings, request)
    return run.count_only() if run.dry_run else run.execute(run.take_lock())


def plan_run(settings: Settings, request: CleanupRequest, *, refuse: bool = True) -> Run:
    """Check everything a run needs before it writes anything. Raises BadSetting, DatabaseUnavailable,
    LockTimeout (another session kept the table locked past CLEANUP_LOCK_TIMEOUT_MS), and
    DependentRowsRefused unless ``refuse`` is False (``run --all``: the Run's ``refusal`` says it)."""
    started, t0 = utcnow(), time.monotonic()
    if request.batch_size is not None and not 1 <= request.batch_size <= 1_000_000:
        raise BadSetting("--batch-size", request.batch_size, "must be between 1 and 1000000")
    try:
        trigger = Trigger(request.trigger)
    except ValueError:
        raise BadSetting("trigger", request.trigger, f"must be one of {', '.join(Trigger)}") from None
    cutoff = resolve_cutoff(retention_days=request.retention_days, cutoff=request.cutoff,
                            default_days=settings.retention_days, now=started)
    # The store's probe (and the client's import, ~0.2 s) runs while the database is planned; it is
    # waited for before anything is written, so an unusable store still fails the run first.
    probe = StoreProbe.start(settings)
    try:
        with pacing.lock_waits(settings.table, settings):  # every statement of the run waits at most the timeout
            engine = check_connection(settings, bounded=True)
            info = describe_table(settings, engine)
            if request.cutoff is None:  # N days are calendar days in the table's zone, as PostgreSQL counts them
                cutoff = resolve_cutoff(retention_days=request.retention_days, cutoff=None,
                                        default_days=settings.retention_days, now=started, zone=info.zone)
            dependents = table_dependents(engine, info)
            identity = table_identity(settings, engine)
        refusal = dependents.refusal(allow_delete_triggers=settings.allow_delete_triggers)
        if refusal and refuse and not request.dry_run:  # before the lock, the history row or the backup file
            raise DependentRowsRefused(info.display_name, refusal)
        store = LocalFolderStore.prepare(settings.backup_dir)
        probe.wait()  # an unusable BACKUP_STORE fails the run here (BadSetting), before anything is written
    finally:
        probe.settle()
    run_id = str(uuid.uuid4())
    final, partial, manifest = backup_names(store.root, info.display_name, run_id, started)
    return Run(settings=settings, engine=engine, info=info, run_id=run_id, cutoff=cutoff, trigger=trigger,
               started=started, t0=t0, batch_size=request.batch_size or settings.batch_size,
               backup_file=final, partial_file=partial, manifest_file=manifest, dry_run=request.dry_run,
               notify=request.notify, progress=request.progress, identity=identity, dependents=dependents,
               max_runtime_s=request.max_runtime_s)


@dataclass(frozen=True, kw_only=True)
class Run:
    """One cleanup run, decided: what, when, where its backup goes, who asked. The steps are its methods."""

    settings: Settings
    engine: Engine
    info: TableInfo
    run_id: str
    cutoff: datetime
    trigger: Trigger
    started: datetime
    t0: float  # time.monotonic() at the start, for the duration
    batch_size: int
    backup_file: Path  # final name; written as partial_file until verified
    partial_file: Path
    manifest_file: Path
    dry_run: bool
    notify: bool
    progress: Progress | None
    identity: TableIdentity  # the server's identity of the table: the lock and the run records' key
    dependents: Dependents  # foreign keys, delete triggers and RLS found when planning

    @property
    def notes(self) -> tuple[str, ...]:
        """RLS, delete triggers that fire; for a dry run, a refusal the real run would meet."""
        allow = self.settings.allow_delete_triggers
        refusal = self.dependents.refusal(allow_delete_triggers=allow)
        found = (f"a cleanup would be refused: {refusal}",) if refusal else ()
        return found + run_notes(self.dependents, allow_delete_triggers=allow)
    max_runtime_s: float | None = None

    @property
    def table(self) -> str:
        return self.info.display_name

    def result(self, status: RunStatus, **fields: Any) -> RunResult:
        """This run's RunResult with ``status``; ``fields`` override the zero defaults."""
        rows = fields.pop("rows", 0)
        values: dict[str, Any] = dict(
            run_id=self.run_id, status=status, table=self.table, cutoff=self.cutoff, rows_archived=rows,
            rows_deleted=rows, backup_file=None, manifest_file=None, sha256=None,
            notification=NotifyStatus.PENDING, duration_s=round(time.monotonic() - self.t0, 3),
            trigger=self.trigger, started_at=self.started, finished_at=utcnow(), rows_matched=rows,
            notes=self.notes,
        )
        values.update(fields)
        return RunResult(**values)

    def record(self, r: RunResult) -> None:
        """Insert a finished run's history row (runs that never held rows: dry run, nothing to do)."""
        history.insert_run(
            self.engine, self.info.schema, run_id=r.run_id, table_name=r.table, trigger=r.trigger,
            status=r.status, started_at=r.started_at, finished_at=r.finished_at, cutoff=r.cutoff,
            rows_archived=r.rows_archived, rows_deleted=r.rows_deleted, rows_matched=r.rows_matched,
            backup_file=r.backup_file, manifest_file=r.manifest_file, sha256=r.sha256,
            notification=r.notification, error=r.error, pid=os.getpid(), table_key=self.identity.key,
            rows_skipped=r.rows_skipped, notes="\n".join(r.notes) or None,
        )

    def count_only(self) -> RunResult:
        """The dry run: count what would go, record it, change nothing else."""
        with pacing.lock_waits(self.table, self.settings):
            p = preview(self.settings, cutoff=self.cutoff, engine=self.engine, info=self.info)
        result = self.result(RunStatus.DRY_RUN, rows_matched=p.rows_to_delete, notification=NotifyStatus.SKIPPED,
                             rows_skipped=p.rows_skipped)
        try:
            with map_exceptions():
                self.record(result)
        except PermissionDenied as exc:  # a read-only role: the count is still the answer
            log.warning("dry run not recorded in the history (%s); nothing was changed", exc.one_line())
        log.info("dry run: %d rows of %s older than %s", p.rows_to_delete, self.table, self.cutoff)
        return result

    def take_lock(self) -> LockedConnection:
        """A connection holding the table's cleanup lock. Raises LockHeld."""
        conn = LockedConnection(self.settings, self.engine)
        try:
            conn.lock()
        except BaseException:
            conn.close()
            raise
        return conn

    def execute(self, conn: LockedConnection) -> RunResult:
        """The run proper, with the lock held by ``conn``; releases it before notifying.

        Raises CleanupFailed when the database fails outside a batch (a batch's own failure
        is recorded and returned as status ``failed``).
        """
        try:
            with map_exceptions():
                with pacing.lock_waits(self.table, self.settings):
                    check_can_clean(self.engine, self.info)
                    history.ensure_history(self.engine, self.info.schema)
                    recovered = recover_interrupted(self.settings, engine=self.engine, info=self.info)
                result = self.archive_and_delete(conn)
                after = after_run(self.settings)  # expiry and Drive copies, under the lock this run holds
                if after:
                    history.update_run(self.engine, self.info.schema, result.run_id,
                                       notes="\n".join(result.notes + after))
        except DatabaseError as exc:  # outside a batch: disk full, connection lost, a lock wait that ran out
            if isinstance(exc, LockTimeout) and exc.changed_nothing:  # pacing.lock_waits: its line says it all
                raise
            raise CleanupFailed(N_("cleanup of {table} stopped: {error}; the next run recovers anything unfinished"),
                                run_id=self.run_id, table=self.table, error=exc.msg) from None
        finally:
            conn.close()
        result = dataclasses.replace(result, recovered_runs=tuple(r.run_id for r in recovered),
                                     notes=result.notes + after)
        if self.notify:
            return self.report(result, recovered)
        history.update_run(self.engine, self.info.schema, result.run_id, notification=NotifyStatus.SKIPPED)
        return dataclasses.replace(result, notification=NotifyStatus.SKIPPED)

    def archive_and_delete(self, conn: LockedConnection) -> RunResult:
        """Batches until no old row is left, then finish the backup and record success."""
        with pacing.lock_waits(self.table, self.settings):  # every wait before the first batch
            batcher, fmt = batcher_for(self, conn)
            dropper = partition_dropper(self, conn, batcher.select_list)
            # partitioned: whether any old row exists (an index probe); the batches count what the drops leave
            total = batcher.count() if dropper is None else int(dropper.any_old(self.cutoff, batcher.cutoff_param))
            if total == 0 and not (dropper and dropper.pending()):
                result = self.result(RunStatus.NOTHING_TO_DO, rows_skipped=batcher.skipped)
                self.record(result)
                log.info("nothing to do: no row of %s is older than %s", self.table, self.cutoff.isoformat())
                return result
            history.insert_run(
                self.engine, self.info.schema, run_id=self.run_id, table_name=self.table, trigger=self.trigger,
                status=RunStatus.RUNNING, started_at=self.started, cutoff=self.cutoff,
                partial_file=str(self.partial_file), backup_file=str(self.backup_file),
                manifest_file=str(self.manifest_file), pid=os.getpid(), table_key=self.identity.key,
                rows_skipped=batcher.skipped, notes="\n".join(self.notes) or None,
            )
        journal = Journal(self.run_id)
        pacer = pacing.Pacer.for_run(self.settings, batch_size=self.batch_size, engine=self.engine,
                                     max_runtime_s=self.max_runtime_s)
        before = space.measure_quietly(self.engine, self.info)
        writer: MemberWriter | None = None
        try:
            with map_exceptions():
                writer = MemberWriter(self.partial_file, self.settings.gzip_level)
                uploaded = attach_segments(self.settings, writer, self.backup_file)
                log.info("archiving %d rows of %s older than %s into %s", total, self.table,
                         self.cutoff.isoformat(), self.backup_file.name)
                dropped = dropper.run(self.cutoff, writer, journal) if dropper else []
                if dropper:
                    total = journal.rows + batcher.count()
                pacing.run_batches(batcher, writer, journal, total=total, pacer=pacer, progress=self.progress)
                writer.close()
                if journal.rows == 0:  # the rows went away between the count and the batches (or no time)
                    return self._nothing_left(pacer.stop_reason)
                fields = build_manifest(
                    self.info, run_id=self.run_id, cutoff=self.cutoff, span=(journal.min_ts, journal.max_ts),
                    deflate=codec_for(self.settings.gzip_level).library, sqlite_format=fmt, settings=self.settings,
                )
                if dropped:
                    fields["partitions"] = manifest_entries(self.engine, self.info.schema, self.run_id)
                if self.dependents.delete_hooks:  # allowed, or plan_run would have refused
                    fields["delete_triggers_fired"] = [f"{h.kind} {h.name} on {h.table}"
                                                       for h in self.dependents.delete_hooks]
                done = finish_anywhere(self.settings, FinishRequest(
                    partial=self.partial_file, final=self.backup_file, committed_bytes=writer.size,
                    rows=journal.rows, sha256=writer.sha.hexdigest(), known=writer.verified(),
                    manifest_fields=fields, uploaded=uploaded,
                ))
        except RetentionError as exc:
            if writer is not None:
                writer.close()
            log.error("cleanup of %s failed: %s", self.table, exc.one_line())
            return self.fail(exc.one_line())
        finished, scan = utcnow(), done.scan
        where = dict(backup_file=done.data and str(done.data), manifest_file=done.manifest and str(done.manifest),
                     backup_url=done.url)
        status = RunStatus.PARTIAL if pacer.stop_reason else RunStatus.SUCCESS
        history.update_run(
            self.engine, self.info.schema, self.run_id, status=status, finished_at=finished, error=pacer.stop_reason,
            rows_archived=journal.rows, rows_deleted=journal.rows, sha256=scan.sha256,
            backup_bytes=scan.size_bytes, partial_file=None, **where,
        )
        log.info("archived and deleted %d rows of %s; backup %s (sha256 %s)", journal.rows, self.table,
                 done.url or self.backup_file.name, scan.sha256[:12])
        result = self.result(status, rows=journal.rows, sha256=scan.sha256, backup_bytes=scan.size_bytes,
                             finished_at=finished, rows_skipped=batcher.skipped, partitions=tuple(dropped),
                             error=pacer.stop_reason, **where)
        return space.with_space(result, before, engine=self.engine, info=self.info, settings=self.settings)

    def _nothing_left(self, stopped: str | None = None) -> RunResult:
        status = RunStatus.PARTIAL if stopped else RunStatus.NOTHING_TO_DO
        remove_partial(self.partial_file)
        history.update_run(self.engine, self.info.schema, self.run_id, status=status, error=stopped,
                           finished_at=utcnow(), backup_file=None, manifest_file=None, partial_file=None)
        return self.result(status, error=stopped)

    def fail(self, message: str) -> RunResult:
        """Record a failed run, finishing the backup of whatever batches did commit.

        Tried twice: a server that just terminated every connection (the cause of the
        failure, often) leaves dead ones in the pool, and the second try gets a fresh one.
        """
        for attempt in (1, 2):
            try:
                with map_exceptions():
                    return self._record_failure(message)
            except RetentionError as exc:  # the database itself is gone: the next run recovers this one
                if attempt == 2:
                    log.error("could not record the failure of run %s (%s); the next run will recover it",
                              self.run_id, exc.one_line())
        return self.result(RunStatus.FAILED, error=message)

    def _record_failure(self, message: str) -> RunResult:
        row = history.get_run(self.engine, self.info.schema, self.run_id)
        if row is None:  # failed before its history row was written
            return self.result(RunStatus.FAILED, error=message)
        settle(self.settings, self.info, row, status=RunStatus.FAILED, error=message)
        row = history.get_run(self.engine, self.info.schema, self.run_id) or row
        return dataclasses.replace(history.row_to_result(row), duration_s=round(time.monotonic() - self.t0, 3))

    def report(self, result: RunResult, recovered: list[RunResult]) -> RunResult:
        """Send the Slack report and record its outcome; neither can fail the run."""
        outcome = notify_run(self.settings, result, recovered=recovered)
        status = NotifyStatus(outcome.status)
        try:
            with map_exceptions():
                history.update_run(self.engine, self.info.schema, result.run_id, notification=status,
                                   notification_detail=outcome.detail)
        except RetentionError as exc:  # recording the outcome must not turn a cleanup into a failure
            log.error("could not record the notification outcome of run %s: %s", result.run_id, exc.one_line())
        return dataclasses.replace(result, notification=status, notification_detail=outcome.detail)
