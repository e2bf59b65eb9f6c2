"""Cleanups started from the dashboard: a thin Streamlit-facing wrapper over :mod:`core.runs`.

A Streamlit script is interrupted whenever the user clicks elsewhere; a cleanup
must not be. The page starts a job (``core.runs.start_cleanup``: the run goes on in a
worker thread), keeps it in session state and polls it to draw the progress bar; if
the user leaves, the run goes on (holding the cleanup lock, so other starts are
refused) and the page picks it up again.
"""

from __future__ import annotations

from datetime import datetime

from core import RetentionError, Settings
from core.models import Trigger
from core.runs import TrackedRun, registry, start_cleanup


def start(settings: Settings, *, cutoff: datetime, dry_run: bool, rows_expected: int) -> TrackedRun:
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
    return tracked


def running_jobs() -> list[TrackedRun]:
    """Dashboard cleanups of this process still running (from any browser session)."""
    return registry.running(Trigger.DASHBOARD)
