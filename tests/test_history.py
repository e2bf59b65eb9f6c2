"""The run-history table grows by migrations: a table of the first version is upgraded in place,
never dropped, and a reader of a table not yet upgraded reads it as it is."""

from __future__ import annotations

import json

from sqlalchemy import inspect, text

from core import get_run_result, list_history, run_cleanup
from core.db import get_engine
from core.history import HISTORY_TABLE, SCHEMA_VERSION, VERSION_TABLE
from core.models import NotifyStatus, RunStatus, Trigger

# retention_runs exactly as the first version created it (SQLAlchemy's DDL for it, both dialects).
FIRST_VERSION_DDL = """
CREATE TABLE retention_runs (
    run_id VARCHAR(36) NOT NULL,
    table_name VARCHAR(130) NOT NULL,
    "trigger" VARCHAR(20) NOT NULL,
    status VARCHAR(20) NOT NULL,
    started_at TIMESTAMP WITH TIME ZONE NOT NULL,
    finished_at TIMESTAMP WITH TIME ZONE,
    cutoff TIMESTAMP WITH TIME ZONE NOT NULL,
    rows_archived BIGINT NOT NULL,
    rows_deleted BIGINT NOT NULL,
    backup_file TEXT,
    manifest_file TEXT,
    sha256 VARCHAR(64),
    backup_bytes BIGINT,
    notification VARCHAR(20) NOT NULL,
    notification_detail TEXT,
    error TEXT,
    partial_file TEXT,
    committed_bytes BIGINT NOT NULL,
    batches INTEGER NOT NULL,
    last_key TEXT,
    min_ts TIMESTAMP WITH TIME ZONE,
    max_ts TIMESTAMP WITH TIME ZONE,
    host VARCHAR(255),
    pid INTEGER,
    PRIMARY KEY (run_id)
)
"""
FIRST_VERSION_INDEX = "CREATE INDEX ix_retention_runs_table_name ON retention_runs (table_name)"
OLD_RUN = "00000000-0000-4000-8000-000000000001"


def _create_first_version_table(settings) -> None:
    engine = get_engine(settings)
    when = "2025-01-01 00:00:00.000000" if engine.dialect.name == "sqlite" else "2025-01-01 00:00:00+00"
    with engine.begin() as c:
        c.execute(text(FIRST_VERSION_DDL))
        c.execute(text(FIRST_VERSION_INDEX))
        c.execute(text(
            "INSERT INTO retention_runs (run_id, table_name, \"trigger\", status, started_at, finished_at, cutoff, "
            "rows_archived, rows_deleted, notification, committed_bytes, batches) VALUES "
            "(:id, 'conversation_log', 'cli', 'success', :t, :t, :t, 12, 12, 'sent', 0, 1)"
        ), {"id": OLD_RUN, "t": when})


def _columns(settings) -> set[str]:
    return {c["name"] for c in inspect(get_engine(settings)).get_columns(HISTORY_TABLE)}


def test_a_first_version_history_table_is_upgraded_in_place(demo_settings):
    _create_first_version_table(demo_settings)
    dry = run_cleanup(demo_settings, retention_days=30, dry_run=True)  # a writer: migrates first
    assert "rows_matched" in _columns(demo_settings)
    with get_engine(demo_settings).connect() as c:
        version = c.execute(text(f"SELECT version FROM {VERSION_TABLE} WHERE name = :n"),
                            {"n": HISTORY_TABLE}).scalar()
    assert version == SCHEMA_VERSION
    runs = {r.run_id: r for r in list_history(demo_settings)}
    old = runs[OLD_RUN]
    assert (old.status, old.trigger, old.notification, old.rows_deleted) == (
        RunStatus.SUCCESS, Trigger.CLI, NotifyStatus.SENT, 12)
    assert runs[dry.run_id].rows_matched == dry.rows_matched > 0  # the new column is written and read


def test_a_history_table_not_yet_upgraded_is_read_as_it_is(demo_settings):
    _create_first_version_table(demo_settings)
    (old,) = list_history(demo_settings)
    assert old.run_id == OLD_RUN and old.status is RunStatus.SUCCESS and old.rows_matched == 0
    assert get_run_result(demo_settings, OLD_RUN) == old
    assert "rows_matched" not in _columns(demo_settings)  # reading changed nothing
    assert not inspect(get_engine(demo_settings)).has_table(VERSION_TABLE)


def test_a_fresh_history_table_starts_at_the_latest_version(demo_settings):
    run_cleanup(demo_settings, retention_days=30, notify=False)
    with get_engine(demo_settings).connect() as c:
        version = c.execute(text(f"SELECT version FROM {VERSION_TABLE}")).scalar()
    assert version == SCHEMA_VERSION and "rows_matched" in _columns(demo_settings)


SPACE = ("table_bytes_before", "table_bytes_after", "dead_tuples", "free_bytes", "vacuumed")


def test_a_run_s_space_is_stored_and_read_back_by_history(demo_settings):
    from tests.support.processes import run_cli

    r = run_cleanup(demo_settings.with_overrides(vacuum=True), retention_days=30, notify=False)
    assert r.table_bytes_before and r.table_bytes_after and r.vacuumed is True
    (stored,) = list_history(demo_settings)
    assert {k: getattr(stored, k) for k in SPACE} == {k: getattr(r, k) for k in SPACE}
    assert get_run_result(demo_settings, r.run_id).table_bytes_after == r.table_bytes_after
    out = run_cli(demo_settings, "history", "--json")
    (shown,) = json.loads(out.stdout)["runs"]
    assert {k: shown[k] for k in SPACE} == {k: getattr(r, k) for k in SPACE}
    human = run_cli(demo_settings, "history").stdout
    assert "space:" in human and "VACUUM done" in human


def test_a_history_table_of_the_previous_version_gains_the_space_columns_in_place(demo_settings, monkeypatch):
    """A table at version 6 (before the space columns), with a run in it: the next cleanup adds the
    five columns (ALTER TABLE … ADD COLUMN, nothing dropped or rewritten), the old run reads back
    with no space, and the new run with its own."""
    import core.history as h

    def fresh_caches() -> None:
        monkeypatch.setattr(h, "_tables", {})
        monkeypatch.setattr(h, "_ensured", set())
        monkeypatch.setattr(h, "_readable", {})

    fresh_caches()
    with monkeypatch.context() as old:
        old.setattr(h, "MIGRATIONS", tuple(m for m in h.MIGRATIONS if m[0] <= 6))
        old.setattr(h, "SCHEMA_VERSION", 6)
        first = run_cleanup(demo_settings, retention_days=60, notify=False)
    assert first.status == RunStatus.SUCCESS
    assert not set(SPACE) & _columns(demo_settings)
    fresh_caches()
    (before,) = list_history(demo_settings)  # a reader of the old table changes nothing
    assert before.run_id == first.run_id and before.table_bytes_after is None
    assert not set(SPACE) & _columns(demo_settings)
    second = run_cleanup(demo_settings, retention_days=30, notify=False)
    assert set(SPACE) <= _columns(demo_settings)
    with get_engine(demo_settings).connect() as c:
        assert c.execute(text(f"SELECT version FROM {VERSION_TABLE}")).scalar() == SCHEMA_VERSION
    runs = {r.run_id: r for r in list_history(demo_settings)}
    assert runs[first.run_id].rows_deleted == first.rows_deleted and runs[first.run_id].table_bytes_after is None
    assert runs[second.run_id].table_bytes_after == second.table_bytes_after is not None
