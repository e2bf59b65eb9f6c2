"""Pacing a cleanup on a live database: pauses, batch-time target, replica lag, run-time limit.

A :class:`Pacer` is asked, between two batches, whether the run may go on and how big the
next batch should be:

- ``CLEANUP_PAUSE_MS`` (or a policy's ``pause_ms``): sleep this long between batches, so
  the application's writers get the database (on SQLite, the write lock) in between;
- ``CLEANUP_BATCH_TARGET_MS``: the batch size adapts so that one batch transaction takes
  about this long: each batch's transaction time is measured and the next size scaled by
  target / measured, within [MIN_BATCH, CLEANUP_BATCH_SIZE] and at most doubling per step
  (on SQLite the pause is then at least 100 ms: :data:`SQLITE_FAIR_PAUSE_S`);
- ``CLEANUP_MAX_REPLICA_LAG_S`` (PostgreSQL): before each batch, wait while a replica in
  ``pg_stat_replication`` replays more than this behind;
- ``run --max-runtime MINUTES``: after a batch, stop when the time is up (the run ends
  ``partial``; what it archived and deleted is final, and the next run continues).

Test hook (documented as such): the lag is read through the module-level function
:func:`replica_lag_s`, looked up at every call, so a test may replace it (monkeypatch)
to simulate a lagging replica; nothing else in the core replaces it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from .config import Settings

log = logging.getLogger(__name__)

MIN_BATCH = 100  # the adaptive size never goes below this many rows
START_BATCH = 1_000  # with a time target, the first batch is at most this big (then it grows)
LAG_POLL_S = 1.0  # how often a lagging replica is looked at again
# SQLite with a time target: the pause between batches is at least this long. A writer waiting
# for the write lock sleeps in SQLite's busy handler, whose retries are up to 100 ms apart; a
# batch that took the lock again sooner could find it asleep every time and starve it. A pause
# as long as the longest sleep guarantees one retry falls in it (bench/bench_latency.py).
SQLITE_FAIR_PAUSE_S = 0.1


def sleep(seconds: float) -> None:
    """The pause between batches (one function, so the pauses can be counted)."""
    time.sleep(seconds)


def replica_lag_s(engine: Engine) -> float | None:
    """The largest replay lag of any replica in ``pg_stat_replication``, in seconds; None without one.

    Test hook: tests replace this function to simulate a lagging replica (see the module doc).
    """
    with engine.connect() as conn:
        value = conn.execute(text("SELECT max(extract(epoch FROM replay_lag)) FROM pg_stat_replication")).scalar()
    return None if value is None else float(value)


@dataclass
class Pacer:
    """The pacing of one run; ``stop_reason`` says why it stopped early (None: it did not)."""

    pause_s: float = 0.0
    target_s: float | None = None
    ceiling: int = 50_000
    deadline: float | None = None  # time.monotonic() after which the run stops between batches
    max_lag_s: float | None = None
    engine: Engine | None = None  # PostgreSQL, for the replica lag
    stop_reason: str | None = None
    sizes: list[int] = field(default_factory=list)  # every batch size used, in order
    pauses: int = 0

    @classmethod
    def for_run(cls, settings: Settings, *, batch_size: int, engine: Engine,
                max_runtime_s: float | None = None) -> Pacer:
        pg = engine.dialect.name == "postgresql"
        target_s = settings.batch_target_ms / 1000 if settings.batch_target_ms else None
        pause_s = settings.pause_ms / 1000
        if target_s and not pg:  # see SQLITE_FAIR_PAUSE_S
            pause_s = max(pause_s, SQLITE_FAIR_PAUSE_S)
        return cls(pause_s=pause_s, ceiling=batch_size, target_s=target_s,
                   deadline=None if max_runtime_s is None else time.monotonic() + max_runtime_s,
                   max_lag_s=settings.max_replica_lag_s if pg else None, engine=engine if pg else None)

    def first_size(self) -> int:
        size = min(self.ceiling, START_BATCH) if self.target_s else self.ceiling
        self.sizes.append(size)
        return size

    def out_of_time(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stop_reason = "stopped at --max-runtime"
            return True
        return False

    def next_size(self, size: int, rows: int, seconds: float) -> int:
        """The size of the next batch after one of ``rows`` rows that took ``seconds`` (transaction time)."""
        if self.target_s is None or rows < size:  # no target, or the batch was cut short by the end
            new = size
        else:
            scaled = int(size * self.target_s / max(seconds, 1e-3))
            new = max(MIN_BATCH, min(self.ceiling, 2 * size, scaled))
            if new != size:
                log.debug("batch of %d rows took %.0f ms (target %.0f ms): next batch %d rows", rows,
                          1000 * seconds, 1000 * self.target_s, new)
        self.sizes.append(new)
        return new

    def before_batch(self, first: bool) -> bool:
        """Pause (not before the first batch) and wait out replica lag; False when the run must stop."""
        if not first and self.pause_s > 0:
            self.pauses += 1
            sleep(self.pause_s)
        return self.wait_for_replicas()

    def wait_for_replicas(self) -> bool:
        if self.max_lag_s is None or self.engine is None:
            return True
        while True:
            lag = replica_lag_s(self.engine)
            if lag is None or lag <= self.max_lag_s:
                return True
            log.info("a replica lags %.1f s (CLEANUP_MAX_REPLICA_LAG_S %.1f s): waiting", lag, self.max_lag_s)
            if self.out_of_time():
                self.stop_reason = f"stopped at --max-runtime while a replica lagged {lag:.1f} s"
                return False
            self.pauses += 1
            sleep(LAG_POLL_S if self.deadline is None else max(0.0, min(LAG_POLL_S, self.deadline - time.monotonic())))


def set_lock_timeout(conns: Any, milliseconds: int | None) -> None:
    """PostgreSQL: ``lock_timeout`` for the cleanup's own sessions (DB-API connections), when set."""
    if milliseconds is None:
        return
    for conn in conns:
        with conn.cursor() as cur:
            cur.execute(f"SET lock_timeout = {int(milliseconds)}")
        conn.commit()


def run_batches(batcher: Any, writer: Any, journal: Any, *, total: int, pacer: Pacer,
                progress: Any = None) -> None:
    """Batch after batch, paced, until none is left or the pacer says stop.

    ``batcher``/``writer``/``journal``: the run's (core.batches, core.backup.writer);
    ``progress(rows_done, rows_total)`` after each batch. Raises what a batch raises.
    """
    if progress:
        progress(0, total)
    batcher.batch_size = pacer.first_size()
    while pacer.before_batch(first=journal.batches == 0):
        t0 = time.monotonic()
        done = batcher.run_batch(writer, journal.last_key, journal)
        if done is None:
            return
        journal.add(done)
        log.info("batch %d: archived and deleted %d rows (%d so far)", journal.batches, done.rows, journal.rows)
        if progress:
            progress(journal.rows, max(total, journal.rows))
        batcher.batch_size = pacer.next_size(batcher.batch_size, done.rows, time.monotonic() - t0)
        if pacer.out_of_time():
            return
