"""Cleanups started from the dashboard: a thin Streamlit-facing wrapper over :mod:`core.runs`.

A Streamlit script is interrupted whenever the user clicks elsewhere; a cleanup
must not be. The page starts a job (``core.runs.start_cleanup``: the run goes on in a
worker thread), keeps it in session state and polls it to draw the progress bar; if
the user leaves, the run goes on (holding the cleanup lock, so other starts are
refused) and the page picks it up again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from core import RetentionError, Settings
from core.models import RunResult, Trigger
from core.runs import TrackedRun, registry, start_cleanup


@dataclass
class CleanupJob:
    """One dashboard cleanup: the core's tracker plus what the page remembers about it."""

    run: TrackedRun
    caches_cleared: bool = False

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def dry_run(self) -> bool:
        return self.run.dry_run

    @property
    def running(self) -> bool:
        return self.run.running

    @property
    def done(self) -> threading.Event:
        return self.run.done

    @property
    def fraction(self) -> float:
        return self.run.fraction

    @property
    def rows_done(self) -> int:
        return self.run.rows_done

    @property
    def rows_total(self) -> int:
        return self.run.rows_total

    @property
    def result(self) -> RunResult | None:
        return self.run.result

    @property
    def error(self) -> str | None:
        return self.run.error


def start(settings: Settings, *, cutoff: datetime, dry_run: bool, rows_expected: int) -> CleanupJob:
    """Start a cleanup with exactly this cutoff in a worker thread; return at once.

    A refusal (LockHeld: another cleanup runs; nothing changed) becomes the job's
    ``error``, like any RetentionError of the run itself.
    """
    try:
        tracked = start_cleanup(settings, trigger=Trigger.DASHBOARD, cutoff=cutoff, dry_run=dry_run,
                                rows_expected=rows_expected)
    except RetentionError as exc:
        tracked = TrackedRun(run_id="not-started", trigger=Trigger.DASHBOARD, cutoff=cutoff, dry_run=dry_run)
        tracked.finish(exc)
    return CleanupJob(tracked)


def running_jobs() -> list[CleanupJob]:
    """Dashboard cleanups of this process still running (from any browser session)."""
    return [CleanupJob(run) for run in registry.running(Trigger.DASHBOARD)]
