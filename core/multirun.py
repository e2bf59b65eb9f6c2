"""Every retention policy, one after another: ``run --all`` and the trigger's multi-policy job.

:func:`plan_policies` plans a :class:`~core.cleanup.Run` per policy first (so a bad policy
file, a missing table or column, an unreachable database is refused, exit 2, before
anything runs); :func:`execute_policies` then runs them in policy order, each under its
own table lock (taken when its turn comes, or handed in already taken by the launcher),
and sends one Slack summary for the whole set.

What belongs to one policy stays that policy's outcome, and the others still run: a
refusal for dependent rows or delete triggers (``failed``, its one line in ``error``), a
lock wait past ``CLEANUP_LOCK_TIMEOUT_MS`` (``failed``), another cleanup holding the table's
lock (``locked``). Each is a full run JSON. A refused or locked policy changes nothing, not even the
history (as a single refused or locked run); any other failure is recorded in the history like any run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from . import history
from .cleanup import CleanupRequest, Run, plan_run
from .config import Settings
from .db import LockedConnection
from .errors import DependentRowsRefused, LockHeld, LockTimeout, RetentionError, map_exceptions
from .models import NotifyStatus, PoliciesResult, PolicyRun, RunResult, RunStatus, Trigger, utcnow
from .notify.summary import notify_runs
from .policies import every_policy
from .timefmt import resolve_cutoff

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unplanned:
    """A policy whose planning met a lock wait that ran out (SQLite: another session kept the
    database locked while its table was described): its turn reports that, the others run."""

    settings: Settings
    request: CleanupRequest
    error: str
    run_id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def table(self) -> str:
        return self.settings.table

    def result(self) -> RunResult:
        """The failed run JSON of this policy (its cutoff as the request and the policy give it, in UTC)."""
        now = utcnow()
        cutoff = resolve_cutoff(retention_days=self.request.retention_days, cutoff=self.request.cutoff,
                                default_days=self.settings.retention_days, now=now)
        return RunResult(run_id=self.run_id, status=RunStatus.FAILED, table=self.table, cutoff=cutoff,
                         rows_archived=0, rows_deleted=0, backup_file=None, manifest_file=None, sha256=None,
                         notification=NotifyStatus.SKIPPED, duration_s=0.0, trigger=Trigger(self.request.trigger),
                         started_at=now, finished_at=now, error=self.error)


Planned = Run | Unplanned


def plan_policies(settings: Settings, request: CleanupRequest, *, only: str | None = None) -> list[Planned]:
    """One planned Run per policy (or the one for table ``only``), an :class:`Unplanned` for a policy
    whose table stayed locked. Raises BadSetting/BadPolicy, DatabaseUnavailable: nothing has been
    written then. A policy refused for its dependents is planned; its turn reports the refusal."""
    per_run = dataclasses.replace(request, notify=False)  # one summary for the set instead
    planned: list[Planned] = []
    for policy in every_policy(settings, only):
        try:
            planned.append(plan_run(policy, per_run, refuse=False))
        except LockTimeout as exc:
            log.warning("policy %s: %s", policy.table, exc.one_line())
            planned.append(Unplanned(policy, per_run, exc.one_line()))
    return planned


def run_policies(settings: Settings, request: CleanupRequest, *, only: str | None = None) -> PoliciesResult:
    """``run --all``: plan every policy, then run them one after another. Raises what planning raises."""
    return execute_policies(settings, plan_policies(settings, request, only=only), notify=request.notify,
                            max_runtime_s=request.max_runtime_s)


def execute_policies(
    settings: Settings,
    runs: Sequence[Planned],
    *,
    notify: bool = True,
    locks: Mapping[str, LockedConnection] | None = None,
    max_runtime_s: float | None = None,
    on_result: Callable[[PolicyRun], None] | None = None,
) -> PoliciesResult:
    """Run planned runs in order; a locked table, a refused or failed run does not stop the others.

    ``locks`` (by run id) are locks already taken (the launcher takes them all up front);
    else each run takes its lock when its turn comes. ``max_runtime_s`` is shared by the
    set: each run gets what is left. Never raises RetentionError: each outcome is a PolicyRun.
    """
    deadline = None if max_runtime_s is None else time.monotonic() + max_runtime_s
    outcomes: list[PolicyRun] = []
    for run in runs:
        conn = (locks or {}).get(run.run_id)
        if isinstance(run, Unplanned):
            outcome = PolicyRun(run.table, run.result())
        else:
            # its own start and duration: it was planned with the others, before they ran
            run = dataclasses.replace(run, started=utcnow(), t0=time.monotonic())
            if deadline is not None:
                run = dataclasses.replace(run, max_runtime_s=max(0.0, deadline - time.monotonic()))
            outcome = _one(run, conn)
        outcomes.append(outcome)
        if on_result:
            on_result(outcome)
    result = PoliciesResult(runs=tuple(outcomes))
    if notify and not all(r.status == RunStatus.DRY_RUN for r in outcomes):
        result = _report(settings, [r for r in runs if isinstance(r, Run)], result)
    return result


def _one(run: Run, conn: LockedConnection | None) -> PolicyRun:
    if run.dry_run:
        try:
            return PolicyRun(run.table, run.count_only())
        except RetentionError as exc:
            return PolicyRun(run.table, run.result(RunStatus.FAILED, error=exc.one_line(),
                                                   notification=NotifyStatus.SKIPPED, notes=()))
    refusal = run.dependents.refusal(allow_delete_triggers=run.settings.allow_delete_triggers)
    if refusal:
        if conn is not None:
            conn.close()
        return _did_not_run(run, RunStatus.FAILED, DependentRowsRefused(run.table, refusal), record=False)
    try:
        conn = conn or run.take_lock()
    except LockHeld as exc:
        return _did_not_run(run, RunStatus.LOCKED, exc, record=False)
    except RetentionError as exc:
        return _did_not_run(run, RunStatus.FAILED, exc)
    try:
        return PolicyRun(run.table, run.execute(conn))
    except RetentionError as exc:
        return _did_not_run(run, RunStatus.FAILED, exc)


def _did_not_run(run: Run, status: RunStatus, exc: RetentionError, *, record: bool = True) -> PolicyRun:
    """A policy that stopped before (or outside) its batches: its run JSON, recorded in the history
    (``record``) unless the run already has a row there (a run that died mid-way: the next run recovers it)."""
    (log.warning if status == RunStatus.LOCKED else log.error)("policy %s: %s", run.table, exc.one_line())
    result = run.result(status, error=exc.one_line(), notification=NotifyStatus.SKIPPED, notes=())
    if not record:
        return PolicyRun(run.table, result, recorded=False)
    try:
        with map_exceptions():
            if history.get_run(run.engine, run.info.schema, run.run_id) is None:
                run.record(result)
    except RetentionError as err:
        log.error("policy %s: could not record its %s run in the history: %s", run.table, status, err.one_line())
    return PolicyRun(run.table, result)


def _report(settings: Settings, runs: Sequence[Run], result: PoliciesResult) -> PoliciesResult:
    """One Slack summary for the set; its outcome is recorded in each run's history row."""
    outcome = notify_runs(settings, result)
    by_id = {r.run_id: r for r in runs}
    updated = []
    for policy_run in result.runs:
        r = policy_run.result
        if r.run_id in by_id and policy_run.recorded:  # update_run would create a history table for nothing
            run = by_id[r.run_id]
            try:
                with map_exceptions():
                    history.update_run(run.engine, run.info.schema, r.run_id, notification=outcome.status,
                                       notification_detail=outcome.detail)
            except RetentionError as exc:
                log.error("could not record the Slack outcome of run %s: %s", r.run_id, exc.one_line())
        policy_run = dataclasses.replace(policy_run, result=dataclasses.replace(
            r, notification=NotifyStatus(outcome.status), notification_detail=outcome.detail))
        updated.append(policy_run)
    return PoliciesResult(runs=tuple(updated))
