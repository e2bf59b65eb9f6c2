"""CLEANUP_LOCK_TIMEOUT_MS bounds every wait of a cleanup on another session's lock, planning included.

The session in the way holds the strongest lock there is: ``LOCK TABLE … IN ACCESS EXCLUSIVE
MODE`` on PostgreSQL (a migration's), ``BEGIN EXCLUSIVE`` on SQLite (nobody may even read).
Before the bound covered planning, PostgreSQL waited for good in the table's description
and SQLite gave up after its 30 s busy timeout with an unexplained driver error.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
from sqlalchemy import text
from sqlalchemy.engine import make_url

from core import pacing
from core.cleanup import run_cleanup
from core.db import get_engine
from core.demo import demo_data
from core.models import RunStatus
from tests.support.databases import make_settings
from tests.support.invariants import check_no_loss
from tests.support.processes import one_line_error, run_cli

TIMEOUT_MS = 300


def keys(settings, table: str = "conversation_log") -> set[str]:
    with get_engine(settings).connect() as conn:
        return {str(k) for k in conn.execute(text(f"SELECT id FROM {table}")).scalars()}


@contextmanager
def locked_out(settings, table: str = "conversation_log") -> Iterator[None]:
    """Another session holds the lock that keeps everyone off ``table`` (SQLite: the whole file)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(url.database, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    conn = psycopg2.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        with conn.cursor() as cur:
            cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        conn.rollback()
        conn.close()


def history_count(settings) -> int:
    engine = get_engine(settings)
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, "retention_runs"):
            return 0
        return int(conn.execute(text("SELECT count(*) FROM retention_runs")).scalar())


def test_a_conflicting_lock_stops_the_run_within_the_timeout_with_one_line(db_url, tmp_path):
    settings = make_settings(db_url, tmp_path / "backups")
    demo_data(settings, rows=600, days=90, seed=7)
    before = keys(settings)
    with locked_out(settings):
        t0 = time.monotonic()
        out = run_cli(settings, "run", "--json", "--no-notify", CLEANUP_LOCK_TIMEOUT_MS=str(TIMEOUT_MS), timeout=60)
        elapsed = time.monotonic() - t0
    line = one_line_error(out.stderr)  # exactly one line, no traceback
    assert out.returncode == 1, out.stderr
    assert "cleanup of conversation_log stopped" in line and f"CLEANUP_LOCK_TIMEOUT_MS = {TIMEOUT_MS} ms" in line
    assert "nothing was archived or deleted" in line
    assert out.stdout == ""
    assert elapsed < 15  # the interpreter's start and one wait of 300 ms; not 30 s, not for good
    assert keys(settings) == before and history_count(settings) == 0
    assert not list(Path(settings.backup_dir).glob("*.csv.gz*"))
    assert run_cli(settings, "run", "--no-notify", CLEANUP_LOCK_TIMEOUT_MS=str(TIMEOUT_MS)).returncode == 0


def test_a_dry_run_is_bounded_too(db_url, tmp_path):
    settings = make_settings(db_url, tmp_path / "backups")
    demo_data(settings, rows=300, days=90, seed=8)
    with locked_out(settings):
        out = run_cli(settings, "run", "--dry-run", CLEANUP_LOCK_TIMEOUT_MS=str(TIMEOUT_MS), timeout=60)
    assert out.returncode == 1 and f"CLEANUP_LOCK_TIMEOUT_MS = {TIMEOUT_MS} ms" in one_line_error(out.stderr)


POLICIES = """
[[policy]]
table = "conversation_log"
timestamp_column = "created_at"
retention_days = 30

[[policy]]
table = "api_usage"
timestamp_column = "created_at"
retention_days = 30
"""


def test_run_all_reports_the_locked_out_policy_as_failed_and_runs_the_others(db_url, tmp_path):
    settings = make_settings(db_url, tmp_path / "backups")
    demo_data(settings, rows=600, days=90, seed=1)
    demo_data(settings.with_overrides(table="api_usage"), rows=400, days=90, seed=2)
    path = tmp_path / "policies.toml"
    path.write_text(POLICIES)
    before = keys(settings)
    with locked_out(settings, "conversation_log"):
        out = run_cli(settings, "run", "--all", "--json", "--no-notify", RETENTION_POLICIES_FILE=str(path),
                      CLEANUP_LOCK_TIMEOUT_MS=str(TIMEOUT_MS), timeout=60)
    assert out.returncode == 1, out.stderr
    first, second = json.loads(out.stdout)["runs"]
    assert set(first) == set(second)
    assert first["status"] == "failed" and f"CLEANUP_LOCK_TIMEOUT_MS = {TIMEOUT_MS} ms" in first["error"]
    assert keys(settings) == before
    if db_url.startswith("sqlite"):  # the lock holds the whole file: the other policy meets it too
        assert second["status"] == "failed" and "CLEANUP_LOCK_TIMEOUT_MS" in second["error"]
    else:
        assert second["status"] == "success" and second["rows_deleted"] > 0


def test_a_sqlite_batch_kept_waiting_past_the_timeout_is_retried(tmp_path, monkeypatch):
    """Between two batches an application opens a write transaction for 400 ms: the next
    batch's BEGIN IMMEDIATE gives up after 100 ms (SQLITE_BUSY), rolls back and is retried,
    and the run finishes with nothing lost."""
    settings = make_settings(f"sqlite:///{tmp_path / 'w.db'}", tmp_path / "backups", lock_timeout_ms=100)
    demo_data(settings, rows=1500, days=90, seed=3)
    original = keys(settings)
    app = sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False)
    pauses = {"n": 0}

    def pause(seconds: float) -> None:
        pauses["n"] += 1
        if pauses["n"] == 1:
            app.execute("BEGIN IMMEDIATE")
            threading.Timer(0.4, app.execute, args=("COMMIT",)).start()

    monkeypatch.setattr(pacing, "sleep", pause)
    r = run_cleanup(settings.with_overrides(pause_ms=1), batch_size=300, notify=False)
    app.close()
    assert r.status == RunStatus.SUCCESS, r.error
    assert r.rows_deleted > 600
    check_no_loss(settings, original)
