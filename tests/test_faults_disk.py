"""Fault scenario: the disk fills up (a file-size limit, RLIMIT_FSIZE) while a cleanup writes
its backup, its manifest, or the SQLite database itself.

As root a read-only folder does not stop writes, so the limit is how "the disk filled up"
is made; SIGXFSZ is ignored so that write() fails with EFBIG like a full disk. Every case
ends with the invariant checks of ``tests/support/invariants.py``.
"""

from __future__ import annotations

import json
import random
import resource
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, Table, Text

import core
from core.db import get_engine
from core.demo import demo_data
from tests.support.databases import TABLE, history_rows, make_settings, table_snapshot
from tests.support.invariants import check_instant, check_settled
from tests.support.processes import one_line_error, run_cli

pytestmark = pytest.mark.faults


def _file_size_limit(limit: int) -> Any:
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def _quote_heavy_table(settings, rows: int) -> None:
    """Rows whose CSV form is about twice their size in the database (every quote is doubled),
    so that with BACKUP_GZIP_LEVEL=0 the backup outgrows a limit the database file stays under."""
    engine = get_engine(settings)
    pg = engine.dialect.name == "postgresql"
    t = Table(TABLE, MetaData(), Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
              Column("message", Text), Column("created_at", DateTime(timezone=True), nullable=False, index=True))
    t.metadata.create_all(engine)
    now = datetime.now(UTC)
    rnd = random.Random(3)
    data = []
    for i in range(1, rows + 1):
        ts = now - timedelta(days=40 + i / rows * 40, seconds=rnd.random())
        data.append({"id": i, "message": f'"{i}" ' + '""' * 400 + "\u00e9\n",
                     "created_at": ts if pg else ts.replace(tzinfo=None)})
    with engine.begin() as conn:
        conn.execute(t.insert(), data)


def _db_file_size(settings) -> int:
    if settings.database_url.startswith("sqlite"):
        return Path(settings.database_url.removeprefix("sqlite:///")).stat().st_size
    return 0


@pytest.mark.parametrize("case", ["first batch", "mid-run"])
def test_disk_full_while_writing_the_backup(settings, tmp_path: Path, case: str):
    """The backup write fails with EFBIG (a file-size limit just above the database file):
    exit 1 with one line naming the cause; rows deleted by committed batches are in a finished
    backup that verifies, nothing else is deleted, no file looks complete that is not; the next
    run (without the limit) archives the rest."""
    _quote_heavy_table(settings, 1500)
    core.run_cleanup(settings, dry_run=True)  # the history table exists, as after any first run
    original = set(table_snapshot(settings))
    snapshot = table_snapshot(settings)
    # The limit is on every file's size: a little above the SQLite file, so that only the backup hits it.
    # "first batch": one batch of every row, larger than the limit; "mid-run": batches of 100.
    limit = _db_file_size(settings) + 300_000
    batch = "5000" if case == "first batch" else "100"
    p = run_cli(settings, "run", "--batch-size", batch, "--no-notify", preexec_fn=_file_size_limit(limit),
                BACKUP_GZIP_LEVEL="0")
    assert p.returncode == 1, (p.returncode, p.stderr)
    line = one_line_error(p.stderr)
    assert "failed" in line and "File too large" in line, line
    runs = [r for r in history_rows(settings) if r["status"] != "dry_run"]
    assert [r["status"] for r in runs] == ["failed"], runs
    (run,) = runs
    inst = check_instant(settings, original)
    if case == "first batch":
        assert int(run["rows_deleted"]) == 0 and inst.in_table == len(original)
        assert not any(Path(settings.backup_dir).glob("*.csv.gz*")), list(Path(settings.backup_dir).iterdir())
    else:
        assert int(run["rows_deleted"]) > 0 and inst.in_backups == int(run["rows_deleted"])
        assert "completed and verified" in run["error"]
    check_settled(settings, original, None, restore=False)
    again = run_cli(settings, "run", "--no-notify", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "success"
    check_settled(settings, original, snapshot)


def test_disk_full_for_the_manifest(pg_settings):
    """Batches of one row commit until the file-size limit stops the backup, and the limit then
    also stops the manifest of the rows already deleted: exit 1, no .csv.gz without its manifest,
    the deleted rows stay in the run's partial file, and the next run finishes that backup first.
    (PostgreSQL only: on SQLite such a limit stops the database file first.)"""
    settings = pg_settings
    demo_data(settings, rows=300, days=90, seed=8)
    core.run_cleanup(settings, dry_run=True)
    original = set(table_snapshot(settings))
    snapshot = table_snapshot(settings)
    p = run_cli(settings, "run", "--batch-size", "1", "--no-notify", preexec_fn=_file_size_limit(1200))
    assert p.returncode == 1, p.stderr
    line = one_line_error(p.stderr)
    assert "File too large" in line and "needs attention" in line, line
    (run,) = [r for r in history_rows(settings) if r["status"] != "dry_run"]
    assert run["status"] == "failed" and int(run["rows_deleted"]) > 0 and run["partial_file"], run
    assert not list(Path(settings.backup_dir).glob("*.csv.gz")), "a backup without its manifest looks complete"
    inst = check_instant(settings, original)
    assert inst.committed == int(run["rows_deleted"])
    again = core.run_cleanup(settings, notify=False)
    assert again.status == "success" and run["run_id"] in again.recovered_runs, again
    (finished,) = [r for r in history_rows(settings) if r["run_id"] == run["run_id"]]
    assert finished["status"] == "failed" and finished["partial_file"] is None
    assert "completed and verified" in finished["error"]
    check_settled(settings, original, snapshot)


def test_sqlite_disk_full_for_the_database_too(tmp_path: Path):
    """A file-size limit below the SQLite file: the database's own writes fail. One clear line,
    exit 1, nothing changed (SQLite's journal is rolled back by the next run), the next run succeeds."""
    s = make_settings(f"sqlite:///{tmp_path / 'full.db'}", tmp_path / "backups")
    demo_data(s, rows=3000, days=90, seed=5)
    core.run_cleanup(s, dry_run=True)
    snapshot = table_snapshot(s)
    p = run_cli(s, "run", "--batch-size", "100", "--no-notify", preexec_fn=_file_size_limit(100_000))
    assert p.returncode == 1, p.stderr
    line = one_line_error(p.stderr)
    assert "disk I/O error" in line and "unexpected" not in line, line
    check_instant(s, set(snapshot))
    assert table_snapshot(s) == snapshot
    assert not list(Path(s.backup_dir).glob("*.csv.gz*"))
    again = run_cli(s, "run", "--no-notify", "--json")
    assert again.returncode == 0, again.stderr
    check_settled(s, set(snapshot), snapshot)
