"""Partition-aware retention on PostgreSQL: wholly old monthly partitions are detached, archived
into the run's backup and dropped; the straddling and default partitions go through batches."""

from __future__ import annotations

import json

import pytest

from core import preview, restore_backup, run_cleanup, verify_backup
from core.errors import BadSetting, RestoreError
from core.models import RunStatus
from tests.support.databases import IN_CI
from tests.support.partitioned import (
    CUTOFF,
    MONTHS,
    backup_ids,
    ids,
    insert_rows,
    make_monthly,
    partitions,
    sql,
)

DROPPED = ["conversation_log_p2024_01", "conversation_log_p2024_02", "conversation_log_p2024_03"]


def _old_ids(url: str) -> set[int]:
    return {r[0] for r in sql(url, f"SELECT id FROM conversation_log WHERE created_at < '{CUTOFF.isoformat()}'")[0]}


def test_wholly_old_partitions_are_dropped_and_the_rest_deleted_in_batches(pg_settings, pg_url):
    make_monthly(pg_url)
    before, old = ids(pg_url), _old_ids(pg_url)
    r = run_cleanup(pg_settings, cutoff=CUTOFF, notify=False)
    assert r.status is RunStatus.SUCCESS
    assert [p.name for p in r.partitions] == [f"public.{n}" for n in DROPPED]
    assert all(p.rows == 40 for p in r.partitions)
    # straddling April partition and the default partition: only their old rows went, by batches
    assert r.rows_deleted == len(old) == 3 * 40 + 10 + 21  # April: rows 0..20 of 40 before the 15th
    assert partitions(pg_url) == ["conversation_log_default", "conversation_log_p2024_04",
                                  "conversation_log_p2024_05", "conversation_log_p2024_06"]
    assert sql(pg_url, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'conversation_log_p2024_0%'")[0][0][0] == 3
    in_backup = backup_ids(pg_settings.backup_dir)
    assert sorted(in_backup) == sorted(old) and ids(pg_url) == before - old
    assert verify_backup(pg_settings, r.backup_file).ok
    manifest = json.loads(open(r.manifest_file).read())
    assert [p["name"] for p in manifest["partitions"]] == [f"public.{n}" for n in DROPPED]
    assert manifest["partitions"][0]["from"].startswith("2024-01-01T00:00:00")
    assert manifest["partitions"][0]["to"].startswith("2024-02-01T00:00:00")
    assert manifest["partitions"][0]["bound"].startswith("FOR VALUES FROM ('2024-01-01")
    states = sql(pg_url, "SELECT part_name, state, rows FROM retention_partitions ORDER BY part_name")[0]
    assert [tuple(s) for s in states] == [(n, "dropped", 40) for n in DROPPED]


def test_without_a_default_partition_the_detach_is_concurrent_and_still_exact(pg_settings, pg_url):
    make_monthly(pg_url, default=False)
    old = _old_ids(pg_url)
    r = run_cleanup(pg_settings, cutoff=CUTOFF, notify=False)
    assert r.status is RunStatus.SUCCESS and len(r.partitions) == 3
    assert sorted(backup_ids(pg_settings.backup_dir)) == sorted(old)
    assert not (_old_ids(pg_url))


def test_restore_recreates_a_dropped_partition_from_the_manifest_bounds(pg_settings, pg_url):
    make_monthly(pg_url, default=False)
    before = ids(pg_url)
    r = run_cleanup(pg_settings, cutoff=CUTOFF, notify=False)
    restored = restore_backup(pg_settings, r.backup_file)
    assert restored.rows_restored == r.rows_deleted
    assert ids(pg_url) == before
    assert "conversation_log_p2024_01" in partitions(pg_url)
    bound = sql(pg_url, "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'conversation_log_p2024_02'")
    assert "2024-02-01" in bound[0][0][0] and "2024-03-01" in bound[0][0][0]


def test_restore_refuses_in_one_line_when_the_default_partition_holds_that_range(pg_settings, pg_url):
    make_monthly(pg_url)
    r = run_cleanup(pg_settings, cutoff=CUTOFF, notify=False)
    sql(pg_url, "INSERT INTO conversation_log (created_at, message) VALUES ('2024-02-10 00:00+00', 'late')")
    before = ids(pg_url)
    with pytest.raises(RestoreError) as err:
        restore_backup(pg_settings, r.backup_file)
    assert "conversation_log_p2024_02" in str(err.value) and "default partition" in str(err.value)
    assert "\n" not in str(err.value)
    assert ids(pg_url) == before  # nothing restored, nothing created
    assert "conversation_log_p2024_01" not in partitions(pg_url)


def test_list_partitioning_is_handled_by_batches(pg_settings, pg_url):
    sql(pg_url, "CREATE TABLE conversation_log (id bigserial, created_at timestamptz NOT NULL, room text, "
                "PRIMARY KEY (id, created_at, room)) PARTITION BY LIST (room)",
        "CREATE TABLE conversation_log_a PARTITION OF conversation_log FOR VALUES IN ('a')",
        "CREATE TABLE conversation_log_b PARTITION OF conversation_log FOR VALUES IN ('b')",
        "INSERT INTO conversation_log (created_at, room) SELECT timestamptz '2024-01-01 00:00+00' "
        "+ g * interval '10 hours', CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 200) g")
    old = _old_ids(pg_url)
    before = ids(pg_url)
    r = run_cleanup(pg_settings, cutoff=CUTOFF, notify=False)  # three key columns: walked as a composite key
    assert r.status is RunStatus.SUCCESS and r.partitions == ()  # list partitions are never dropped whole
    assert r.rows_deleted == len(old) > 0
    assert sorted(backup_ids(pg_settings.backup_dir)) == sorted(old)
    assert sorted(ids(pg_url)) == sorted(set(before) - old)


def test_subpartitioned_old_month_goes_through_batches(pg_settings, pg_url):
    sql(pg_url, "CREATE TABLE conversation_log (id bigserial, created_at timestamptz NOT NULL, message text, "
                "PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)",
        "CREATE TABLE conversation_log_p1 PARTITION OF conversation_log FOR VALUES FROM ('2024-01-01 00:00+00') "
        "TO ('2024-02-01 00:00+00') PARTITION BY RANGE (created_at)",
        "CREATE TABLE conversation_log_p1a PARTITION OF conversation_log_p1 FOR VALUES FROM ('2024-01-01 00:00+00') "
        "TO ('2024-02-01 00:00+00')",
        "CREATE TABLE conversation_log_p2 PARTITION OF conversation_log FOR VALUES FROM ('2024-02-01 00:00+00') "
        "TO ('2024-03-01 00:00+00')",
        "INSERT INTO conversation_log (created_at, message) SELECT timestamptz '2024-01-01 00:00+00' "
        "+ g * interval '10 hours', 'm' FROM generate_series(1, 100) g")
    before = ids(pg_url)
    r = run_cleanup(pg_settings, cutoff=CUTOFF, notify=False)
    assert r.status is RunStatus.SUCCESS and r.rows_deleted == 100
    assert [p.name for p in r.partitions] == ["public.conversation_log_p2"]  # the empty leaf month
    assert "conversation_log_p1" in partitions(pg_url)  # the sub-partitioned month stays, emptied by batches
    assert sorted(backup_ids(pg_settings.backup_dir)) == sorted(before) and not ids(pg_url)


def _partman(url: str) -> None:
    """The log table managed by pg_partman 4.7 (native, monthly from January 2024, its default partition)."""
    available = sql(url, "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_partman'")[0][0][0]
    if not available:
        if IN_CI:
            pytest.fail("CI=true requires pg_partman (scripts/test.sh installs postgresql-15-partman)")
        pytest.skip("pg_partman is not installed")
    sql(url, "CREATE SCHEMA partman", "CREATE EXTENSION pg_partman SCHEMA partman",
        "CREATE TABLE conversation_log (id bigserial, created_at timestamptz NOT NULL, message text, "
        "PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)",
        "CREATE INDEX ON conversation_log (created_at)",
        "SELECT partman.create_parent('public.conversation_log', 'created_at', 'native', '1 month', "
        "p_start_partition := '2024-01-01 00:00+00')",
        insert_rows("conversation_log", MONTHS, 40))


def test_a_pg_partman_table_is_cleaned_and_its_maintenance_still_runs(pg_settings, pg_url):
    _partman(pg_url)
    old = _old_ids(pg_url)
    r = run_cleanup(pg_settings, cutoff=CUTOFF, notify=False)
    assert r.status is RunStatus.SUCCESS and r.rows_deleted == len(old)
    assert [p.name for p in r.partitions] == [f"public.{n}" for n in DROPPED]
    assert sorted(backup_ids(pg_settings.backup_dir)) == sorted(old)
    sql(pg_url, "SELECT partman.run_maintenance('public.conversation_log')", "CALL partman.run_maintenance_proc()")
    left = partitions(pg_url)
    assert "conversation_log_default" in left and "conversation_log_p2024_04" in left
    assert not set(DROPPED) & set(left)  # maintenance does not bring the dropped months back
    sql(pg_url, "INSERT INTO conversation_log (created_at, message) VALUES (now(), 'new')")  # still routes
    again = run_cleanup(pg_settings, cutoff=CUTOFF, notify=False)
    assert again.status is RunStatus.NOTHING_TO_DO


def test_a_pg_partman_table_with_partman_retention_is_refused_unchanged(pg_settings, pg_url):
    _partman(pg_url)
    sql(pg_url, "UPDATE partman.part_config SET retention = '3 months' WHERE parent_table = 'public.conversation_log'")
    before = ids(pg_url)
    with pytest.raises(BadSetting) as err:
        run_cleanup(pg_settings, cutoff=CUTOFF, notify=False)
    assert "pg_partman" in str(err.value) and "retention" in str(err.value)
    assert ids(pg_url) == before and "conversation_log_p2024_01" in partitions(pg_url)


def test_preview_shows_per_partition_what_is_dropped_and_what_is_deleted(pg_settings, pg_url):
    make_monthly(pg_url)
    p = preview(pg_settings, cutoff=CUTOFF)
    plan = {x.name: (x.action, x.rows) for x in p.partitions}
    assert plan == {"public.conversation_log_default": ("delete", 10),
                    "public.conversation_log_p2024_01": ("drop", 40), "public.conversation_log_p2024_02": ("drop", 40),
                    "public.conversation_log_p2024_03": ("drop", 40), "public.conversation_log_p2024_04": ("delete", 21)}
    assert p.rows_to_delete == sum(x.rows for x in p.partitions)


def test_zone_less_partition_bounds_are_wall_times_in_the_table_zone(pg_settings, pg_url):
    """A naive-timestamp month that ends at local midnight is not wholly old at 20:00 local the day before."""
    from datetime import UTC, datetime

    from sqlalchemy.engine import make_url

    db = make_url(pg_url).database
    sql(pg_url, f"ALTER DATABASE \"{db}\" SET TimeZone = 'America/Los_Angeles'",
        "CREATE TABLE conversation_log (id bigserial, created_at timestamp NOT NULL, "
        "PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)",
        "CREATE TABLE conversation_log_jun PARTITION OF conversation_log FOR VALUES FROM ('2024-06-01') TO ('2024-07-01')",
        "CREATE TABLE conversation_log_jul PARTITION OF conversation_log FOR VALUES FROM ('2024-07-01') TO ('2024-08-01')",
        "INSERT INTO conversation_log (created_at) VALUES ('2024-06-10 12:00'), ('2024-07-31 19:00'), "
        "('2024-07-31 21:00')")
    cutoff = datetime(2024, 8, 1, 3, 0, tzinfo=UTC)  # 2024-07-31 20:00 in Los Angeles
    plan = {p.name.split(".")[-1]: p.action for p in preview(pg_settings, cutoff=cutoff).partitions}
    assert plan == {"conversation_log_jun": "drop", "conversation_log_jul": "delete"}
    r = run_cleanup(pg_settings, cutoff=cutoff, notify=False)
    assert [p.name.split(".")[-1] for p in r.partitions] == ["conversation_log_jun"]
    assert r.rows_deleted == 2
    left = sql(pg_url, "SELECT created_at::text FROM conversation_log")[0]
    assert [row[0] for row in left] == ["2024-07-31 21:00:00"]  # younger than the cutoff: kept
