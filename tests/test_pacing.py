"""Gentle on a live database: pauses, batch-time target, --max-runtime, replica lag, lock timeout, space."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from core import pacing
from core.cleanup import CleanupRequest, run_cleanup, run_request
from core.db import get_engine
from core.demo import demo_data
from core.models import RunStatus
from core.stats import preview
from tests.support.databases import make_settings
from tests.support.invariants import check_no_loss


@pytest.fixture
def table(db_url: str, tmp_path: Path):
    settings = make_settings(db_url, tmp_path / "backups")
    demo_data(settings, rows=3000, days=90, seed=7)
    return settings


def keys(settings) -> set[str]:
    with get_engine(settings).connect() as conn:
        return {str(k) for k in conn.execute(text(f"SELECT id FROM {settings.table}")).scalars()}


def pg_connect(settings):
    url = make_url(settings.database_url).set(drivername="postgresql")
    return psycopg2.connect(url.render_as_string(hide_password=False))


def test_the_pause_falls_between_batches_only(table, monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(pacing, "sleep", lambda s: slept.append(s))
    r = run_cleanup(table.with_overrides(pause_ms=40), batch_size=500, notify=False)
    batches = -(-r.rows_deleted // 500)
    assert r.status == RunStatus.SUCCESS and batches >= 3
    assert slept == [0.04] * batches  # after every batch, the last one's "nothing left" check included
    monkeypatch.undo()
    demo_data(table, rows=1500, days=90, seed=8)
    t0 = time.monotonic()
    r = run_cleanup(table.with_overrides(pause_ms=100), batch_size=300, notify=False)
    # real sleeps now: at least one pause per batch after the first
    assert time.monotonic() - t0 >= 0.1 * (r.rows_deleted // 300 - 1)


def record_batches(monkeypatch) -> list[tuple[int, int, float, bool, int]]:
    """Every (size asked, rows done, lock hold in seconds, cut short, next size) the pacer is told of."""
    seen: list[tuple[int, int, float, bool, int]] = []
    real = pacing.Pacer.next_size

    def record(self, size, rows, seconds, *, cut=False):
        new = real(self, size, rows, seconds, cut=cut)
        seen.append((size, rows, seconds, cut, new))
        return new

    monkeypatch.setattr(pacing.Pacer, "next_size", record)
    return seen


def test_batch_size_adapts_toward_the_time_target(table, monkeypatch):
    seen = record_batches(monkeypatch)
    original = keys(table)
    r = run_cleanup(table.with_overrides(batch_target_ms=1), batch_size=800, notify=False)
    assert r.status == RunStatus.SUCCESS
    assert all(held > 0 for _, _, held, _, _ in seen)  # each batch measured its own lock hold
    # 1 ms is less than any batch takes: each full batch shrinks the next, down to MIN_BATCH
    full = [x for x in seen if x[1] == x[0] or x[3]]
    assert full and all(new < size or new == pacing.MIN_BATCH for size, _, _, _, new in full)
    check_no_loss(table, original)


def test_the_next_size_aims_below_the_target_grows_gently_and_shrinks_at_once():
    p = pacing.Pacer(target_s=0.2, ceiling=50_000)
    assert p.first_size() == pacing.START_BATCH  # nothing measured yet: a small first batch
    # 1000 rows in 20 ms: 0.14 s (AIM_SHARE of 200 ms) would fit 7000, but growth is capped at 1.5x
    assert p.next_size(1000, 1000, 0.020) == 1500
    assert p.next_size(1500, 1500, 0.030) == 2250
    # a slow batch (1500 rows in 150 ms): the next one shrinks at once, to what fits 140 ms at that pace
    assert p.next_size(2250, 1500, 0.150, cut=True) == 1400
    # the slowest of the last batches still counts: a fast one after it does not jump back up
    assert p.next_size(1400, 1400, 0.014) == 1400
    p2 = pacing.Pacer(target_s=0.2, ceiling=5000)
    assert p2.next_size(4000, 4000, 0.001) == 5000  # never past CLEANUP_BATCH_SIZE
    assert p2.next_size(300, 300, 5.0) == pacing.MIN_BATCH  # never under MIN_BATCH
    assert p2.next_size(1000, 10, 0.001) == 1000  # the table ended: nothing learnt about the size
    assert pacing.Pacer(ceiling=800).next_size(800, 800, 9.0) == 800  # no target: the size stays


def test_sqlite_batches_stop_reading_at_their_share_of_the_target(db_url, tmp_path, monkeypatch):
    """A batch whose rows read slowly (here 40 ms per 250 rows: a busy machine) is cut short once
    SQLITE_READ_SHARE of the target has passed: it stops reading instead of reading every row
    asked, and exactly the rows it read are archived and deleted."""
    settings = make_settings(db_url, tmp_path / "b", batch_target_ms=100)
    demo_data(settings, rows=4000, days=90, seed=11)
    original = keys(settings)
    from core.backup.csvfile import make_rows_encoder

    fast = make_rows_encoder

    def slow_encoder(types):
        encode = fast(types)

        def slowly(rows):
            time.sleep(0.040)
            return encode(rows)
        return slowly

    monkeypatch.setattr("core.batches.make_rows_encoder", slow_encoder)
    seen = record_batches(monkeypatch)
    r = run_cleanup(settings, notify=False)
    assert r.status == RunStatus.SUCCESS and r.rows_deleted > 2000, r.error
    check_no_loss(settings, original)  # each cut batch archived and deleted the same rows
    if settings.database_url.startswith("sqlite"):
        cut = [x for x in seen if x[3]]
        assert cut and all(rows < size for size, rows, _, _, _ in cut), seen
        # Two 250-row pieces take 80 ms, past the 55 ms cut: no batch read more than 500 rows.
        # Without the cut the first batch alone reads its 1000 rows (160 ms of reading).
        assert seen[0][3] and all(rows <= 500 for _, rows, _, _, _ in seen), seen
    else:  # PostgreSQL COPYs server-side: no cut; the holds are still measured
        assert not any(x[3] for x in seen) and all(held > 0 for _, _, held, _, _ in seen)


def test_max_runtime_stops_between_batches_and_the_next_run_continues(table, monkeypatch):
    original = keys(table)
    old = preview(table).rows_to_delete
    monkeypatch.setattr(pacing, "sleep", lambda s: time.sleep(0.3))
    first = run_request(table.with_overrides(pause_ms=1),
                        request=CleanupRequest(batch_size=200, notify=False, max_runtime_s=0.5))
    assert first.status == RunStatus.PARTIAL, first
    assert 0 < first.rows_deleted < old
    assert first.backup_file and Path(first.backup_file).exists() and "max-runtime" in first.error
    check_no_loss(table, original)  # the partial backup is finished and verified: nothing lost
    monkeypatch.undo()
    second = run_cleanup(table, notify=False)
    assert second.status == RunStatus.SUCCESS
    assert second.rows_deleted == old - first.rows_deleted
    check_no_loss(table, original)  # nothing doubled across the two runs either


def test_max_runtime_on_the_command_line(table):
    from tests.support.processes import run_cli

    out = run_cli(table, "run", "--max-runtime", "0.0001", "--batch-size", "100", "--json", "--no-notify")
    assert out.returncode == 0, out.stderr
    assert '"status": "partial"' in out.stdout
    bad = run_cli(table, "run", "--max-runtime", "-1")
    assert bad.returncode == 2 and "--max-runtime" in bad.stderr


def test_a_lagging_replica_pauses_the_run_until_it_catches_up(pg_url, tmp_path, monkeypatch):
    """Test hook (core.pacing.replica_lag_s, documented there): the lag source is replaced."""
    settings = make_settings(pg_url, tmp_path / "b", max_replica_lag_s=2.0)
    demo_data(settings, rows=1500, days=90, seed=3)
    assert pacing.replica_lag_s(get_engine(settings)) is None  # the real query: no replica here
    lags = iter([10.0, 5.0, 1.0] + [0.0] * 100)
    monkeypatch.setattr(pacing, "replica_lag_s", lambda engine: next(lags))
    slept: list[float] = []
    monkeypatch.setattr(pacing, "sleep", lambda s: slept.append(s))
    r = run_cleanup(settings, notify=False)
    assert r.status == RunStatus.SUCCESS
    assert slept == [pacing.LAG_POLL_S, pacing.LAG_POLL_S]  # waited while 10 s and 5 s behind, not at 1 s


def test_a_lagging_replica_past_the_max_runtime_stops_the_run_cleanly(pg_url, tmp_path, monkeypatch):
    settings = make_settings(pg_url, tmp_path / "b", max_replica_lag_s=1.0)
    demo_data(settings, rows=800, days=90, seed=3)
    original = keys(settings)
    monkeypatch.setattr(pacing, "replica_lag_s", lambda engine: 30.0)
    r = run_request(settings, request=CleanupRequest(notify=False, max_runtime_s=0.3))
    assert r.status == RunStatus.PARTIAL and r.rows_deleted == 0 and "replica" in r.error
    assert keys(settings) == original


def test_a_lock_timeout_stops_the_run_cleanly_and_loses_nothing(pg_url, tmp_path):
    settings = make_settings(pg_url, tmp_path / "b", lock_timeout_ms=100)
    demo_data(settings, rows=2000, days=90, seed=4)
    original = keys(settings)
    holder = pg_connect(settings)
    try:
        with holder.cursor() as cur:  # a row lock on the 700th old row, as an application's open transaction
            cur.execute("SELECT id FROM conversation_log WHERE id = (SELECT id FROM conversation_log WHERE "
                        "created_at < now() - interval '30 days' ORDER BY id OFFSET 700 LIMIT 1) FOR UPDATE")
        t0 = time.monotonic()
        r = run_cleanup(settings, batch_size=300, notify=False)
        elapsed = time.monotonic() - t0
    finally:
        holder.rollback()
        holder.close()
    assert r.status == RunStatus.FAILED
    assert "lock timeout" in r.error and "\n" not in r.error
    assert r.rows_deleted == 600  # the two batches before the locked row: final, in a verified backup
    assert elapsed < 20  # 5 tries of 100 ms, not 5 of the default 30 s
    check_no_loss(settings, original)
    r = run_cleanup(settings, notify=False)  # the lock is gone: the next run finishes the job
    assert r.status == RunStatus.SUCCESS
    check_no_loss(settings, original)


def test_a_table_lock_blocking_deletes_makes_the_run_fail_within_the_lock_timeout(pg_url, tmp_path):
    settings = make_settings(pg_url, tmp_path / "b", lock_timeout_ms=200)
    demo_data(settings, rows=500, days=90, seed=5)
    original = keys(settings)
    holder = pg_connect(settings)
    try:
        with holder.cursor() as cur:  # reads go on; every DELETE waits (a migration's lock, say)
            cur.execute("LOCK TABLE conversation_log IN SHARE MODE")
        t0 = time.monotonic()
        r = run_cleanup(settings, notify=False)
        elapsed = time.monotonic() - t0
    finally:
        holder.rollback()
        holder.close()
    assert r.status == RunStatus.FAILED and "lock timeout" in r.error and r.rows_deleted == 0
    assert elapsed < 15
    assert keys(settings) == original
    assert not list(Path(settings.backup_dir).glob("*.csv.gz*"))  # no backup of rows that were not deleted


def test_the_run_reports_space_and_vacuums_when_asked(table):
    r = run_cleanup(table, notify=False)
    assert r.status == RunStatus.SUCCESS and r.vacuumed is None
    assert r.table_bytes_before and r.table_bytes_after
    if table.database_url.startswith("sqlite"):
        assert r.free_bytes > 0 and r.dead_tuples is None  # the deleted rows' pages are free, not returned
    else:
        assert r.dead_tuples is not None and r.free_bytes is None
    demo_data(table, rows=2000, days=90, seed=9)
    r = run_cleanup(table.with_overrides(vacuum=True), notify=False)
    assert r.status == RunStatus.SUCCESS and r.vacuumed is True
    if table.database_url.startswith("sqlite"):
        assert r.free_bytes == 0 and r.table_bytes_after < r.table_bytes_before  # VACUUM gave it back
    else:
        assert r.dead_tuples == 0  # VACUUM (ANALYZE) cleared them
