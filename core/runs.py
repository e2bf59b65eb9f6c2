"""Start a cleanup in the background and track it: the one launcher of the dashboard and the HTTP trigger.

:func:`start_cleanup` checks the settings and takes the cleanup lock in the caller's
thread, so a refusal (BadSetting, LockHeld, …) is raised at once and the HTTP trigger
can answer 409 before any run id exists; then the :class:`~core.cleanup.Run` goes on in
a daemon thread. :data:`registry` keeps the last runs of this process with their
progress and outcome; the history table remains the record.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .cleanup import CleanupRequest, Run, plan_run
from .config import Settings
from .db import LockedConnection
from .errors import RetentionError
from .models import PoliciesResult, PolicyRun, RunResult, RunStatus, Trigger, to_jsonable, utcnow
from .multirun import execute_policies, plan_policies

log = logging.getLogger(__name__)


@dataclass
class TrackedRun:
    """A run this process started. The worker thread writes; any thread may read."""

    run_id: str
    trigger: Trigger
    cutoff: datetime | None = None
    dry_run: bool = False
    rows_expected: int = 0  # the caller's estimate, for progress before the first batch
    started_at: datetime = field(default_factory=utcnow)
    rows_done: int = 0
    rows_total: int = 0
    result: RunResult | None = None
    error: str | None = None  # RetentionError.one_line() (English, as JSON carries it), or what a crash was
    exception: RetentionError | None = None  # the refusal itself, for a page to show in its language
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def running(self) -> bool:
        return not self.done.is_set()

    @property
    def fraction(self) -> float:
        total = self.rows_total or self.rows_expected
        return min(1.0, self.rows_done / total) if total else 0.0

    def progress(self, rows_done: int, rows_total: int) -> None:
        """The core's progress callback: called in the worker after each batch."""
        self.rows_done, self.rows_total = rows_done, rows_total

    def finish(self, outcome: RunResult | BaseException) -> None:
        """Record the run's RunResult, or the error that ended it; wakes whoever waits on ``done``."""
        if isinstance(outcome, RunResult):
            self.result = outcome
            log.info("%s run %s finished: %s, %d rows deleted, Slack %s", self.trigger, outcome.run_id,
                     outcome.status, outcome.rows_deleted, outcome.notification)
        elif isinstance(outcome, RetentionError):
            self.error, self.exception = outcome.one_line(), outcome
        else:
            self.error = f"unexpected error ({type(outcome).__name__}); see the server log"
        self.done.set()

    def to_json(self) -> dict[str, Any]:
        """The RunResult once done (exactly what ``run --json`` prints); before that, or after a crash, a stub."""
        if self.result is not None:
            return to_jsonable(self.result)
        stub: dict[str, Any] = {"run_id": self.run_id, "status": RunStatus.RUNNING.value,
                                "trigger": self.trigger.value, "started_at": to_jsonable(self.started_at)}
        if self.error is not None:
            stub.update(status=RunStatus.FAILED.value, error=self.error)
        return stub


class RunRegistry:
    """The last ``limit`` runs started by this process, by run id (thread-safe)."""

    def __init__(self, limit: int = 200) -> None:
        self._runs: OrderedDict[str, TrackedRun] = OrderedDict()
        self._lock = threading.Lock()
        self.limit = limit

    def add(self, run: TrackedRun) -> None:
        with self._lock:
            self._runs[run.run_id] = run
            while len(self._runs) > self.limit:
                self._runs.popitem(last=False)

    def get(self, run_id: str) -> TrackedRun | None:
        with self._lock:
            return self._runs.get(run_id)

    def running(self, trigger: Trigger | None = None) -> list[TrackedRun]:
        """Runs still going (of one trigger, if given), oldest first."""
        with self._lock:
            return [r for r in self._runs.values() if r.running and (trigger is None or r.trigger == trigger)]


registry = RunRegistry()


def start_cleanup(
    settings: Settings,
    *,
    trigger: Trigger | str = Trigger.HTTP,
    cutoff: datetime | str | None = None,
    retention_days: int | None = None,
    dry_run: bool = False,
    notify: bool = True,
    rows_expected: int = 0,
) -> TrackedRun:
    """Take the lock now, run the cleanup in a background thread, return its tracker at once.

    Raises (synchronously, nothing changed) what run_cleanup raises before it starts:
    BadSetting, DatabaseUnavailable, LockHeld (a dry run takes no lock). The tracker is
    in :data:`registry` under its run id; its ``result`` or ``error`` is set when the run ends.
    """
    run = plan_run(settings, CleanupRequest(cutoff=cutoff, retention_days=retention_days, dry_run=dry_run,
                                            notify=notify, trigger=trigger))
    tracked = TrackedRun(run_id=run.run_id, trigger=run.trigger, cutoff=run.cutoff, dry_run=dry_run,
                         rows_expected=rows_expected)
    run = dataclasses.replace(run, progress=tracked.progress)
    conn = None if dry_run else run.take_lock()

    def work() -> None:
        try:
            outcome: RunResult | BaseException = run.count_only() if conn is None else run.execute(conn)
        except RetentionError as exc:
            log.error("background cleanup %s failed: %s", run.run_id, exc.one_line())
            outcome = exc
        except BaseException as exc:  # a bug: logged with its traceback; the history row says the rest
            log.exception("background cleanup %s crashed", run.run_id)
            outcome = exc
        tracked.finish(outcome)

    registry.add(tracked)
    threading.Thread(target=work, name=f"cleanup-{run.run_id[:8]}", daemon=True).start()
    return tracked


@dataclass
class TrackedPolicies(TrackedRun):
    """A job running every policy (or one) in turn; ``to_json`` is ``{"run_id", "status", "runs"}``."""

    outcomes: list[PolicyRun] = field(default_factory=list)
    final: PoliciesResult | None = None

    def add(self, outcome: PolicyRun) -> None:
        self.outcomes.append(outcome)

    def to_json(self) -> dict[str, Any]:
        runs = self.final.runs if self.final is not None else tuple(self.outcomes)
        status = (self.final.status if self.final is not None else
                  RunStatus.FAILED if self.error is not None else RunStatus.RUNNING)
        out: dict[str, Any] = {"run_id": self.run_id, "status": status.value, "trigger": self.trigger.value,
                               "started_at": to_jsonable(self.started_at), "runs": [r.to_json() for r in runs]}
        if self.error is not None:
            out["error"] = self.error
        return out


def start_policies(settings: Settings, *, trigger: Trigger | str = Trigger.HTTP, only: str | None = None,
                   notify: bool = True) -> TrackedPolicies:
    """Every policy (or the one for table ``only``) in one background job; returns its tracker at once.

    Plans every run and takes every table's lock in the caller's thread: a bad policy file
    or table raises BadSetting, and a table whose cleanup is running raises LockHeld (the
    locks taken so far are released), before anything ran. The job then runs them in turn;
    a policy refused for its dependents, or whose table stayed locked by another session past
    CLEANUP_LOCK_TIMEOUT_MS, is that policy's ``failed`` run, and the others still run.
    """
    runs = plan_policies(settings, CleanupRequest(notify=notify, trigger=trigger), only=only)
    locks: dict[str, LockedConnection] = {}
    try:
        for run in runs:
            if isinstance(run, Run):
                locks[run.run_id] = run.take_lock()
    except BaseException:
        for conn in locks.values():
            conn.close()
        raise
    tracked = TrackedPolicies(run_id=str(uuid.uuid4()), trigger=Trigger(trigger))

    def work() -> None:
        try:
            tracked.final = execute_policies(settings, runs, notify=notify, locks=locks, on_result=tracked.add)
            tracked.done.set()
        except BaseException as exc:  # a bug: logged with its traceback
            log.exception("background cleanup job %s crashed", tracked.run_id)
            for conn in locks.values():
                conn.close()
            tracked.finish(exc)

    registry.add(tracked)
    threading.Thread(target=work, name=f"cleanup-{tracked.run_id[:8]}", daemon=True).start()
    return tracked
