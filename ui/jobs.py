"""Cleanups started from the dashboard run in a worker thread, not in the page script.

A Streamlit script is interrupted whenever the user clicks elsewhere; a cleanup
must not be. The page starts a :class:`CleanupJob`, keeps it in session state and
polls it to draw the progress bar; if the user leaves, the run goes on (holding
the cleanup lock, so other starts are refused) and the page picks it up again.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from core import RetentionError, Settings, run_cleanup
from core.models import RunResult

log = logging.getLogger(__name__)

_JOBS: dict[str, CleanupJob] = {}
_JOBS_LOCK = threading.Lock()


@dataclass
class CleanupJob:
    """One cleanup started from the dashboard; fields are written by the worker only."""

    run_id: str
    cutoff: datetime
    dry_run: bool
    rows_expected: int
    rows_done: int = 0
    rows_total: int = 0
    result: RunResult | None = None
    error: str | None = None  # RetentionError.one_line(), or a crash's type and message
    caches_cleared: bool = False
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


def start(settings: Settings, *, cutoff: datetime, dry_run: bool, rows_expected: int) -> CleanupJob:
    """Start ``run_cleanup`` with exactly this cutoff in a worker thread; return at once.

    The lock is taken in the worker: a LockHeld shows up as the job's ``error``
    (nothing changed), like any RetentionError.
    """
    job = CleanupJob(run_id=str(uuid.uuid4()), cutoff=cutoff, dry_run=dry_run, rows_expected=rows_expected)

    def work() -> None:
        try:
            job.result = run_cleanup(
                settings, cutoff=cutoff, dry_run=dry_run, trigger="dashboard", progress=job.progress,
                run_id=job.run_id,
            )
        except RetentionError as exc:
            job.error = exc.one_line()
        except Exception as exc:  # a bug: logged with its traceback, shown by type and message
            log.exception("dashboard cleanup %s crashed", job.run_id)
            job.error = f"unexpected error ({type(exc).__name__}); see the server log"
        finally:
            job.done.set()

    with _JOBS_LOCK:
        _JOBS[job.run_id] = job
    threading.Thread(target=work, name=f"dashboard-cleanup-{job.run_id[:8]}", daemon=True).start()
    return job


def running_jobs() -> list[CleanupJob]:
    """Dashboard cleanups of this process still running (from any browser session)."""
    with _JOBS_LOCK:
        finished = [k for k, j in _JOBS.items() if not j.running]
        for k in finished:
            del _JOBS[k]
        return list(_JOBS.values())
