"""The run-history table grows by migrations: a table of the first version is upgraded in place,
never dropped, and a reader of a table not yet upgraded reads it as it is."""

from __future__ import annotations

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
