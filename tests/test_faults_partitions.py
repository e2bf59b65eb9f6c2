"""kill -9 during the partition path (journal, detach, COPY, drop): the next run finishes the work
and no row is lost, none is in two backups; a concurrent detach left half-done is FINALIZEd."""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from core import run_cleanup
from core.models import RunStatus
from tests.support.databases import create_pg_database, drop_pg_database, make_settings
from tests.support.partitioned import CUTOFF, backup_ids, ids, make_monthly, partitions, sql
from tests.support.processes import run_cli, start_cli

TRIALS = 8
ARGS = ("run", "--cutoff", CUTOFF.isoformat(), "--no-notify", "--batch-size", "5000", "--json")


def _dsn(url: str) -> str:
    u = make_url(url)
    return f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}"


def _check_settled(url: str, settings, original: set[int]) -> None:
    """Every original row is in the table or in exactly one backup; no old row and no detached table left."""
    table, backed = ids(url), backup_ids(settings.backup_dir)
    assert len(backed) == len(set(backed)), "a row is in two backups"
    assert not table & set(backed), "a row is both in the table and in a backup"
    lost = original - table - set(backed)
    assert not lost, f"{len(lost)} rows lost"
    assert not sql(url, f"SELECT 1 FROM conversation_log WHERE created_at < '{CUTOFF.isoformat()}'")[0]
    left = sql(url, "SELECT part_name, state FROM retention_partitions WHERE state IN ('detaching', 'detached')")[0]
    assert not left, f"journal still holds unfinished partitions {left}"
    assert not sql(url, "SELECT relname FROM pg_class WHERE relname LIKE 'conversation_log_p2024_0%' AND relkind = 'r' "
                        "AND NOT relispartition")[0], "a detached partition was left behind"


@pytest.mark.faults
@pytest.mark.parametrize("default", [True, False], ids=["plain-detach", "concurrent-detach"])
def test_kill_9_during_detach_copy_or_drop_loses_no_row(pg_admin_url, tmp_path, default):
    # one unkilled run for the duration, then kills spread evenly over it
    durations: list[float] = []
    struck = 0
    for trial in range(TRIALS + 1):
        url = create_pg_database(pg_admin_url)
        try:
            (tmp_path / f"t{trial}").mkdir()
            settings = make_settings(url, tmp_path / f"t{trial}" / "backups")
            make_monthly(url, per_month=20_000, default=default)
            original = ids(url)
            child = start_cli(settings, *ARGS)
            if trial == 0:
                t0 = time.monotonic()
                assert child.wait() == 0, child.stderr
                durations.append(time.monotonic() - t0)
            else:
                time.sleep(0.85 * durations[0] * (trial - 1 + 0.5) / TRIALS)  # the reference run may be slower
                struck += child.kill()
                done = run_cli(settings, *ARGS)
                assert done.returncode == 0, done.stderr
            _check_settled(url, settings, original)
        finally:
            drop_pg_database(pg_admin_url, url)
    assert struck >= TRIALS // 2, f"only {struck} of {TRIALS} kills hit a running cleanup"


@pytest.mark.faults
def test_a_half_done_concurrent_detach_is_finalized_and_archived(pg_settings, pg_url):
    make_monthly(pg_url, default=False)
    original = ids(pg_url)
    reader = psycopg2.connect(_dsn(pg_url))
    reader.set_session(isolation_level="REPEATABLE READ")
    reader.cursor().execute("SELECT count(*) FROM conversation_log")  # an old snapshot: the detach waits for it
    detacher = psycopg2.connect(_dsn(pg_url))
    detacher.autocommit = True
    pid = detacher.get_backend_pid()

    def detach() -> None:
        try:
            detacher.cursor().execute("ALTER TABLE conversation_log DETACH PARTITION conversation_log_p2024_01 "
                                      "CONCURRENTLY")
        except psycopg2.Error:
            pass

    t = threading.Thread(target=detach)
    t.start()
    time.sleep(1.0)
    sql(pg_url, f"SELECT pg_terminate_backend({pid})")
    t.join()
    reader.rollback()
    reader.close()
    assert sql(pg_url, "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = 'conversation_log_p2024_01'::regclass")[
        0][0][0]
    r = run_cleanup(pg_settings, cutoff=CUTOFF, notify=False)
    assert r.status is RunStatus.SUCCESS and len(r.partitions) == 3
    assert "conversation_log_p2024_01" not in partitions(pg_url)
    _check_settled(pg_url, pg_settings, original)
