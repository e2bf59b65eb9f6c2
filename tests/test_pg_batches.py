"""PostgreSQL batches: a second connection COPYs in the batch's exported snapshot while the
batch transaction DELETEs. A writer that commits between the snapshot and the COPY must
change nothing about which rows go, and in which version."""

from __future__ import annotations

import csv
import gzip
import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from core import run_cleanup
from core.backup.writer import MemberWriter
from core.config import load_settings
from core.db import LockedConnection, get_engine
from core.demo import demo_data
from tests.support.databases import table_snapshot

OLD = datetime.now(UTC) - timedelta(days=60)


@pytest.fixture
def pg_settings(pg_url: str, tmp_path):
    """A PostgreSQL demo table (600 rows over 90 days); one batch holds every old row."""
    s = load_settings({"database_url": pg_url, "backup_dir": str(tmp_path / "backups"), "batch_size": 100_000},
                      environ={}, env_file=None)
    demo_data(s, rows=600, days=90, seed=7)
    return s


def _backup_rows(path: str) -> dict[str, list[str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return {r[0]: r for r in rows[1:]}


def _message(settings, key: int) -> str | None:
    with get_engine(settings).connect() as c:
        return c.execute(text("SELECT message FROM conversation_log WHERE id = :k"), {"k": key}).scalar()


MESSAGE = 4  # column of ``message`` in the backup


def _once_after_snapshot(monkeypatch: pytest.MonkeyPatch, action) -> None:
    """Run ``action`` once, committed from another connection, after the first batch took its
    snapshot and before the COPY starts (MemberWriter.begin sits between the two)."""
    done = []
    begin = MemberWriter.begin

    def hooked(self: MemberWriter) -> None:
        if not done:
            done.append(True)
            action()
        begin(self)

    monkeypatch.setattr(MemberWriter, "begin", hooked)


def test_row_inserted_after_the_snapshot_stays_in_the_table(pg_settings, monkeypatch):
    engine = get_engine(pg_settings)
    with engine.begin() as c:  # a free key in the middle of the old rows
        gap = c.execute(text("SELECT min(id) + 10 FROM conversation_log")).scalar()
        c.execute(text("DELETE FROM conversation_log WHERE id = :k"), {"k": gap})

    def insert() -> None:
        with engine.begin() as c:
            c.execute(text("INSERT INTO conversation_log (id, session_id, role, message, created_at) "
                           "VALUES (:k, 's', 'user', 'late arrival', :t)"), {"k": gap, "t": OLD})

    _once_after_snapshot(monkeypatch, insert)
    r = run_cleanup(pg_settings, retention_days=30, notify=False)
    assert r.status == "success", r.error
    assert str(gap) not in _backup_rows(r.backup_file)  # the COPY saw the batch's snapshot, not a newer one
    assert _message(pg_settings, gap) == "late arrival"  # and the DELETE left it


def test_row_updated_after_the_snapshot_goes_in_its_new_version(pg_settings, monkeypatch):
    engine = get_engine(pg_settings)
    with engine.connect() as c:
        key = c.execute(text("SELECT id FROM conversation_log WHERE created_at < now() - interval '45 days' "
                             "ORDER BY id LIMIT 1 OFFSET 20")).scalar()

    def update() -> None:
        with engine.begin() as c:
            c.execute(text("UPDATE conversation_log SET message = 'edited' WHERE id = :k"), {"k": key})

    _once_after_snapshot(monkeypatch, update)
    r = run_cleanup(pg_settings, retention_days=30, notify=False)
    assert r.status == "success", r.error
    rows = _backup_rows(r.backup_file)
    assert rows[str(key)][MESSAGE] == "edited"  # the first attempt was rolled back and retried
    assert str(key) not in table_snapshot(pg_settings)
    assert r.rows_deleted == len(rows)


def test_refused_second_connection_falls_back_to_one(pg_settings, monkeypatch, caplog):
    before = set(table_snapshot(pg_settings))
    with get_engine(pg_settings).connect() as c:
        messages = dict(c.execute(text("SELECT id::text, coalesce(message, '') FROM conversation_log")).all())

    def refuse(self: LockedConnection):
        raise OperationalError("connect", {}, Exception("too many clients already"))

    monkeypatch.setattr(LockedConnection, "another", refuse)
    caplog.set_level(logging.WARNING)  # an in-process CLI test may have raised the handlers' levels
    r = run_cleanup(pg_settings, retention_days=30, notify=False)
    assert r.status == "success", r.error
    assert "no second database connection" in caplog.text
    rows = _backup_rows(r.backup_file)
    assert len(rows) == r.rows_deleted > 0
    assert set(rows) | set(table_snapshot(pg_settings)) == before
    assert all(rows[k][MESSAGE] == messages[k] for k in rows)


def test_backup_timestamps_are_utc_whatever_the_server_zone(pg_settings):
    engine = get_engine(pg_settings)
    with engine.begin() as c:
        c.execute(text(f"ALTER DATABASE \"{engine.url.database}\" SET timezone TO 'Asia/Seoul'"))
    from core.db import dispose_engines

    dispose_engines()  # new sessions pick up the database's zone
    r = run_cleanup(pg_settings, retention_days=30, notify=False)
    stamps = [row[-1] for row in _backup_rows(r.backup_file).values()]
    assert stamps and all(s.endswith("+00") for s in stamps), stamps[:3]
