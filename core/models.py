"""Result types shared by every front end: frozen dataclasses with aware UTC datetimes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum, StrEnum
from typing import Any, Callable

from .i18n import N_, _

# progress(rows_done, rows_total): called by long operations after each batch.
Progress = Callable[[int, int], None]


class RunStatus(StrEnum):
    """What became of a run. Values are the stable JSON/history spelling."""

    RUNNING = "running"
    SUCCESS = "success"
    NOTHING_TO_DO = "nothing_to_do"
    DRY_RUN = "dry_run"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    EXPIRED = "expired"  # not a cleanup: a backup deleted everywhere under BACKUP_RETENTION_DAYS
    RESTORED = "restored"  # not a cleanup: a backup's rows put back (rows_matched: rows restored)
    PARTIAL = "partial"  # stopped at --max-runtime (or a lock timeout); what it deleted is final
    LOCKED = "locked"  # run --all: another cleanup of the table held its lock; this one changed nothing

    @property
    def label(self) -> str:
        """Short human label with an icon, for tables and headers."""
        return _(_RUN_LABELS[self])

    @property
    def finished(self) -> bool:
        return self is not RunStatus.RUNNING


_RUN_LABELS = {
    RunStatus.RUNNING: N_("⏳ running"),
    RunStatus.SUCCESS: N_("✅ success"),
    RunStatus.NOTHING_TO_DO: N_("➖ nothing to do"),
    RunStatus.DRY_RUN: N_("🔍 dry run"),
    RunStatus.FAILED: N_("❌ failed"),
    RunStatus.INTERRUPTED: N_("⚠️ interrupted"),
    RunStatus.EXPIRED: N_("🗑️ backup expired"),
    RunStatus.RESTORED: N_("♻️ restored"),
    RunStatus.PARTIAL: N_("⏸️ partial"),
    RunStatus.LOCKED: N_("🔒 locked"),
}


class NotifyStatus(StrEnum):
    """What became of a run's Slack report."""

    PENDING = "pending"
    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"

    @property
    def label(self) -> str:
        return _(_NOTIFY_LABELS[self])


_NOTIFY_LABELS = {
    NotifyStatus.PENDING: N_("⏳ pending"),
    NotifyStatus.SENT: N_("✅ sent"),
    NotifyStatus.SKIPPED: N_("➖ skipped"),
    NotifyStatus.FAILED: N_("❌ failed"),
}


class Trigger(StrEnum):
    """Which front end started a run."""

    CLI = "cli"
    DASHBOARD = "dashboard"
    HTTP = "http"
    TEST = "test"


def utcnow() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)


def to_jsonable(value: Any) -> Any:
    """Dataclasses, datetimes and paths to plain JSON values (ISO 8601 with offset)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class PartitionPlan:
    """What a cleanup would do with one partition: ``drop`` it whole, ``delete`` its old rows in batches."""

    name: str
    bound: str
    action: str  # "drop" | "delete"
    rows: int  # its rows older than the cutoff (exact)


@dataclass(frozen=True)
class Preview:
    """What a cleanup with ``cutoff`` would archive and delete, now."""

    table: str
    cutoff: datetime
    rows_to_delete: int
    total_rows: int
    oldest: datetime | None
    newest: datetime | None
    warnings: tuple[str, ...] = ()
    rows_skipped: int = 0  # old rows a cleanup would keep: still referenced through RESTRICT / NO ACTION
    refusal: str | None = None  # why a cleanup would be refused now (dependent rows, delete triggers)
    partitions: tuple[PartitionPlan, ...] = ()  # PostgreSQL range partitions holding old rows


@dataclass(frozen=True)
class DayCount:
    day: date
    rows: int


@dataclass(frozen=True)
class BucketCount:
    label: str
    min_days: int
    max_days: int | None
    rows: int


@dataclass(frozen=True)
class Stats:
    """Row counts by age, from SQL aggregates."""

    table: str
    total_rows: int
    oldest: datetime | None
    newest: datetime | None
    buckets: tuple[BucketCount, ...]
    per_day: tuple[DayCount, ...]
    table_bytes: int | None
    computed_at: datetime
    warnings: tuple[str, ...] = ()
    estimated: bool = False  # total, buckets and per-day counts from the planner's statistics (core/fast_stats.py)


@dataclass(frozen=True)
class PartitionDrop:
    """A partition a run detached, archived and dropped whole (PostgreSQL range partitioning)."""

    name: str  # schema.partition
    bound: str  # FOR VALUES FROM (…) TO (…), as PostgreSQL prints it
    lower: datetime | None  # None: MINVALUE
    upper: datetime | None
    rows: int


@dataclass(frozen=True)
class RunResult:
    """The outcome of one cleanup run, as ``run --json`` prints it."""

    run_id: str
    status: RunStatus
    table: str
    cutoff: datetime
    rows_archived: int
    rows_deleted: int
    backup_file: str | None
    manifest_file: str | None
    sha256: str | None
    notification: NotifyStatus
    duration_s: float
    trigger: Trigger
    started_at: datetime
    finished_at: datetime | None
    error: str | None = None
    notification_detail: str | None = None
    backup_bytes: int | None = None
    rows_matched: int = 0  # rows older than the cutoff when the run looked (a dry run's answer)
    recovered_runs: tuple[str, ...] = ()
    rows_skipped: int = 0  # old rows kept: other rows still reference them (RESTRICT / NO ACTION)
    notes: tuple[str, ...] = ()  # row-level security, delete triggers that fired, a refusal a dry run found
    # Read from history: status 'running' while no process holds the table's lock. The next
    # cleanup recovers it; readers never write (docs/design.md, "Locking by identity").
    awaiting_recovery: bool = False
    backup_url: str | None = None  # the stored object (BACKUP_STORE), or None
    partitions: tuple[PartitionDrop, ...] = ()  # dropped whole instead of deleted (core/partitions.py)
    # Space (core.space): PostgreSQL pg_total_relation_size and n_dead_tup; SQLite the file and its free pages.
    table_bytes_before: int | None = None
    table_bytes_after: int | None = None
    dead_tuples: int | None = None
    free_bytes: int | None = None
    vacuumed: bool | None = None  # None: not asked (CLEANUP_VACUUM); False: asked, but it failed (see the log)


@dataclass(frozen=True)
class BackupInfo:
    """One backup file and its manifest."""

    file: str
    manifest_file: str
    table: str
    rows: int
    cutoff: datetime | None
    created_at: datetime | None
    size_bytes: int
    sha256: str
    run_id: str | None
    min_timestamp: datetime | None = None
    max_timestamp: datetime | None = None
    error: str | None = None  # the manifest or file could not be read: this entry is only its name and why
    # where it lives: {"kind": "local" | "store", "where": path or s3:// URL, "verified": bool}
    locations: tuple[dict[str, Any], ...] = ()
    source: dict[str, Any] | None = None  # the manifest's source: dialect, database, schema, table (v2)

    @property
    def name(self) -> str:
        return self.file.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    file: str
    rows: int
    sha256: str
    expected_rows: int
    expected_sha256: str
    problem: str | None = None


@dataclass(frozen=True)
class RestoreResult:
    file: str
    table: str
    rows_in_backup: int
    rows_restored: int
    rows_skipped: int
    duration_s: float


@dataclass(frozen=True)
class DemoDataResult:
    table: str
    rows_inserted: int
    created_table: bool
    oldest: datetime | None = None
    newest: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyRun:
    """One policy's part of ``run --all``: its RunResult, whatever became of it.

    A policy that did not run has one too, with every key of the run JSON: status ``locked``
    (another cleanup held the table's lock) or ``failed`` (refused, or stopped before its
    first batch), its one line in ``error``, zeros and nulls for what it did not do.
    """

    table: str
    result: RunResult
    recorded: bool = True  # False: refused or locked, it changed nothing, not even the history

    @property
    def status(self) -> RunStatus:
        return RunStatus(self.result.status)

    @property
    def error(self) -> str | None:
        return self.result.error

    def to_json(self) -> dict[str, Any]:
        """The run JSON, as ``run --json`` prints it."""
        return to_jsonable(self.result)


# The set's status is the worst of its runs' (a dry run set: dry_run; all nothing to do: nothing_to_do).
_SET_ORDER = (RunStatus.FAILED, RunStatus.LOCKED, RunStatus.PARTIAL, RunStatus.SUCCESS, RunStatus.DRY_RUN)


@dataclass(frozen=True)
class PoliciesResult:
    """Every policy's run, in policy order (``run --all``; the HTTP trigger's multi-policy job)."""

    runs: tuple[PolicyRun, ...]

    @property
    def status(self) -> RunStatus:
        """failed > locked > partial > success > dry_run > nothing_to_do: the worst that happened."""
        statuses = {r.status for r in self.runs}
        return next((s for s in _SET_ORDER if s in statuses), RunStatus.NOTHING_TO_DO)

    @property
    def exit_code(self) -> int:
        """0 every policy succeeded, had nothing to do (or stopped at --max-runtime); 1 any failed;
        3 any was locked by another cleanup and none failed."""
        return {RunStatus.FAILED: 1, RunStatus.LOCKED: 3}.get(self.status, 0)

    def to_json(self) -> dict[str, Any]:
        return {"runs": [r.to_json() for r in self.runs]}
