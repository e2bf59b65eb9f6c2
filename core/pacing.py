"""Pacing a cleanup on a live database: pauses, batch-time target, replica lag, run-time limit.

A :class:`Pacer` is asked, between two batches, whether the run may go on and how big the
next batch should be:

- ``CLEANUP_PAUSE_MS`` (or a policy's ``pause_ms``): sleep this long between batches, so
  the application's writers get the database (on SQLite, the write lock) in between;
- ``CLEANUP_BATCH_TARGET_MS``: a bound on how long one batch transaction holds its locks
  (on SQLite, the write lock every application writer waits for). The batch measures its
  own hold, from the moment it has the lock to the end of its COMMIT (fsyncs included),
  and the next size aims at :data:`AIM_SHARE` of the target from the slowest rows-per-second
  of the last :data:`COST_MEMORY` batches, growing by at most :data:`GROWTH` per step and
  shrinking at once, within [MIN_BATCH, CLEANUP_BATCH_SIZE], from a first batch of at most
  :data:`START_BATCH` rows. Aiming below the target leaves room for a batch slower than the
  one before (the machine is shared). On SQLite a batch also stops reading once
  :data:`SQLITE_READ_SHARE` of the target has passed and archives and deletes only the rows
  read so far (:attr:`Pacer.cut_after_s`), so even a batch that meets a slow moment ends
  near the target; and the pause between batches is then at least 100 ms
  (:data:`SQLITE_FAIR_PAUSE_S`);
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
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from .config import Settings
from .db import SQLITE_BUSY_TIMEOUT_S
from .errors import LockTimeout, Msg, map_exceptions
from .i18n import N_

log = logging.getLogger(__name__)

MIN_BATCH = 100  # the adaptive size never goes below this many rows
START_BATCH = 1_000  # with a time target, the first batch is at most this big (then it grows)
AIM_SHARE = 0.7  # a batch aims at this share of the target: one ~40% slower than the last still fits
GROWTH = 1.5  # the size grows by at most this factor per batch (it shrinks at once)
COST_MEMORY = 3  # the next size is sized on the slowest rows-per-second of this many last batches
# SQLite with a target: a batch stops reading rows after this share of the target; what
# follows the reading (DELETE, the backup's last piece, fsync, COMMIT) took 25-40% of the
# hold in bench/bench_latency.py, so the whole hold stays under the target.
SQLITE_READ_SHARE = 0.55
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
    cut_after_s: float | None = None  # SQLite: a batch stops reading rows after this long (SQLITE_READ_SHARE)
    holds: list[float] = field(default_factory=list)  # every batch's lock hold, seconds, in order
    _costs: deque[float] = field(default_factory=lambda: deque(maxlen=COST_MEMORY))  # seconds per row

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
                   max_lag_s=settings.max_replica_lag_s if pg else None, engine=engine if pg else None,
                   cut_after_s=target_s * SQLITE_READ_SHARE if target_s and not pg else None)

    def first_size(self) -> int:
        size = min(self.ceiling, START_BATCH) if self.target_s else self.ceiling
        self.sizes.append(size)
        return size

    def out_of_time(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stop_reason = "stopped at --max-runtime"
            return True
        return False

    def next_size(self, size: int, rows: int, seconds: float, *, cut: bool = False) -> int:
        """The size of the next batch after one of ``rows`` rows (of ``size`` asked) that held its
        locks ``seconds``; ``cut``: it stopped reading at :attr:`cut_after_s`."""
        self.holds.append(seconds)
        if self.target_s is None or rows == 0 or (rows < size and not cut):  # no target, or the table ended
            new = size
        else:
            self._costs.append(max(seconds, 1e-4) / rows)
            fits = int(AIM_SHARE * self.target_s / max(self._costs))
            new = max(MIN_BATCH, min(self.ceiling, int(GROWTH * size), fits))
            if new != size:
                log.debug("batch of %d rows held its locks %.0f ms (target %.0f ms%s): next batch %d rows", rows,
                          1000 * seconds, 1000 * self.target_s, ", cut short" if cut else "", new)
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


@contextmanager
def lock_waits(table: str, settings: Settings) -> Iterator[None]:
    """Around a cleanup's steps before its first change: a lock wait that ran out (LockTimeout, from
    driver errors too) becomes one line saying so and that nothing was changed. Raises LockTimeout."""
    try:
        with map_exceptions():
            yield
    except LockTimeout as exc:
        if exc.changed_nothing:  # already said
            raise
        ms = settings.lock_timeout_ms
        if ms is not None:
            bound = Msg(N_("CLEANUP_LOCK_TIMEOUT_MS = {ms} ms"), {"ms": ms})
        elif "sqlite" in settings.database_url.split(":", 1)[0]:
            bound = Msg(N_("{s} s (SQLite's busy timeout; CLEANUP_LOCK_TIMEOUT_MS sets it)"), {"s": SQLITE_BUSY_TIMEOUT_S})
        else:
            bound = Msg(N_("30 s (CLEANUP_LOCK_TIMEOUT_MS sets it)"))
        raise LockTimeout(N_("cleanup of {table} stopped: another session held a conflicting lock on the table (or "
                             "database) longer than {bound}; nothing was archived or deleted ({error})"),
                          changed_nothing=True, table=table, bound=bound, error=exc.msg) from None


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
    batcher.cut_after_s = pacer.cut_after_s
    while pacer.before_batch(first=journal.batches == 0):
        done = batcher.run_batch(writer, journal.last_key, journal)
        if done is None:
            return
        journal.add(done)
        log.info("batch %d: archived and deleted %d rows (%d so far)", journal.batches, done.rows, journal.rows)
        if progress:
            progress(journal.rows, max(total, journal.rows))
        batcher.batch_size = pacer.next_size(batcher.batch_size, done.rows, done.held_s, cut=done.cut)
        if pacer.out_of_time():
            return
