"""Every retention policy, one after another: ``run --all`` and the trigger's multi-policy job.

:func:`plan_policies` plans a :class:`~core.cleanup.Run` per policy first (so a bad policy
file, a missing table or column, an unreachable database is refused, exit 2, before
anything runs); :func:`execute_policies` then runs them in policy order, each under its
own table lock (taken when its turn comes, or handed in already taken by the launcher),
and sends one Slack summary for the whole set.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from . import history
from .cleanup import CleanupRequest, Run, plan_run
from .config import Settings
from .db import LockedConnection
from .errors import LockHeld, RetentionError, map_exceptions
from .models import NotifyStatus, PoliciesResult, PolicyRun, RunResult, RunStatus
from .notify.summary import notify_runs
from .policies import every_policy

log = logging.getLogger(__name__)


def plan_policies(settings: Settings, request: CleanupRequest, *, only: str | None = None) -> list[Run]:
    """One planned Run per policy (or the one for table ``only``). Raises BadSetting/BadPolicy,
    DatabaseUnavailable: nothing has been written then."""
    per_run = dataclasses.replace(request, notify=False)  # one summary for the set instead
    return [plan_run(s, per_run) for s in every_policy(settings, only)]


def run_policies(settings: Settings, request: CleanupRequest, *, only: str | None = None) -> PoliciesResult:
    """``run --all``: plan every policy, then run them one after another. Raises what planning raises."""
    return execute_policies(settings, plan_policies(settings, request, only=only), notify=request.notify,
                            max_runtime_s=request.max_runtime_s)


def execute_policies(
    settings: Settings,
    runs: Sequence[Run],
    *,
    notify: bool = True,
    locks: Mapping[str, LockedConnection] | None = None,
    max_runtime_s: float | None = None,
    on_result: Callable[[PolicyRun], None] | None = None,
) -> PoliciesResult:
    """Run planned runs in order; a locked table or a failed run does not stop the others.

    ``locks`` (by run id) are locks already taken (the launcher takes them all up front);
    else each run takes its lock when its turn comes. ``max_runtime_s`` is shared by the
    set: each run gets what is left. Never raises RetentionError: each outcome is a PolicyRun.
    """
    deadline = None if max_runtime_s is None else time.monotonic() + max_runtime_s
    outcomes: list[PolicyRun] = []
    for run in runs:
        if deadline is not None:
            run = dataclasses.replace(run, max_runtime_s=max(0.0, deadline - time.monotonic()))
        outcome = _one(run, (locks or {}).get(run.run_id))
        outcomes.append(outcome)
        if on_result:
            on_result(outcome)
    result = PoliciesResult(runs=tuple(outcomes))
    if notify and not all(r.status == RunStatus.DRY_RUN for r in outcomes):
        result = _report(settings, runs, result)
    return result


def _one(run: Run, conn: LockedConnection | None) -> PolicyRun:
    if run.dry_run:
        try:
            return PolicyRun(run.table, run.count_only())
        except RetentionError as exc:
            return PolicyRun(run.table, None, error=exc.one_line())
    try:
        conn = conn or run.take_lock()
    except LockHeld as exc:
        log.warning("policy %s: %s", run.table, exc.one_line())
        return PolicyRun(run.table, None, error=exc.one_line(), locked=True)
    except RetentionError as exc:
        return PolicyRun(run.table, None, error=exc.one_line())
    try:
        return PolicyRun(run.table, run.execute(conn))
    except RetentionError as exc:
        log.error("policy %s: %s", run.table, exc.one_line())
        return PolicyRun(run.table, None, error=exc.one_line())


def _report(settings: Settings, runs: Sequence[Run], result: PoliciesResult) -> PoliciesResult:
    """One Slack summary for the set; its outcome is recorded in each run's history row."""
    outcome = notify_runs(settings, result)
    by_id = {r.run_id: r for r in runs}
    updated = []
    for policy_run in result.runs:
        r: RunResult | None = policy_run.result
        if r is not None and r.run_id in by_id:
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
