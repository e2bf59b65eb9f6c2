"""Every table shape, every time zone, restored exactly (real PostgreSQL and SQLite).

Each round trip compares the whole table before the run and after the restore: on
PostgreSQL every column's text form (``t::text``, so every byte of bytea, NaN, arrays),
on SQLite every value and every cell's storage class (``typeof``).
"""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from core import preview, run_cleanup, stats
from core.backup.restore import restore_backup
from core.config import load_settings
from core.db import dispose_engines
from core.errors import BadSetting
from core.recovery import list_history
from tests.support import ROOT
from tests.support.databases import create_pg_database, drop_pg_database, pg_admin, pg_url_for

DAYS = 40  # crosses the end of daylight saving time in Los Angeles for most of the year


def _settings(url: str, tmp_path: Path, **extra):
    values = {"database_url": url, "backup_dir": str(tmp_path / "backups"), "batch_size": 7, "table": "t",
              "timestamp_column": "created_at", **extra}
    return load_settings(values, environ={}, env_file=None)


def _pg(url: str, *statements: str) -> list:
    """Run statements in a fresh session (autocommit); the rows of the last one."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            rows = None
            for sql in statements:
                res = conn.execute(text(sql))
                rows = res.all() if res.returns_rows else None
        return rows
    finally:
        engine.dispose()


def _pg_table(url: str, order: str = "1") -> list[str]:
    """Every row of t as PostgreSQL prints it, in a fresh UTC session."""
    return [r[0] for r in _pg(url, "SET TIME ZONE 'UTC'", f"SELECT t::text FROM t ORDER BY {order}")]


def _round_trip(settings, snapshot, *, expected: int | None = None):
    """Preview, run, restore; the counts agree and the table is back exactly. Returns the run."""
    before = snapshot()
    shown = preview(settings, retention_days=DAYS).rows_to_delete
    result = run_cleanup(settings, retention_days=DAYS, notify=False)
    assert result.status.value == "success", result.error
    assert result.rows_deleted == shown
    if expected is not None:
        assert shown == expected
    assert len(snapshot()) == len(before) - shown
    restored = restore_backup(settings, result.backup_file)
    assert (restored.rows_restored, restored.rows_skipped) == (shown, 0)
    assert snapshot() == before
    return result


@pytest.fixture
def pg_db(pg_admin_url: str):
    """A database of its own, dropped after the test (ALTER DATABASE needs a database per test)."""
    url = create_pg_database(pg_admin_url)
    yield url
    dispose_engines()
    drop_pg_database(pg_admin_url, url)


# ---------------------------------------------------------------------------
# Zone-less timestamps and dates


@pytest.mark.parametrize("zone", ["Asia/Seoul", "America/Los_Angeles"])
@pytest.mark.parametrize("column", ["timestamp", "date"])
def test_zoneless_columns_lose_exactly_the_rows_postgresql_calls_old(pg_db, tmp_path, zone, column):
    name = pg_db.rsplit("/", 1)[1]
    _pg(pg_db, f"ALTER DATABASE \"{name}\" SET TimeZone = '{zone}'")
    # Rows every hour (half past) over 60 days, written with now() in the database's zone.
    _pg(pg_db, f"CREATE TABLE t (id bigserial PRIMARY KEY, created_at {column} NOT NULL, note text)",
        "INSERT INTO t (created_at, note) SELECT now() - interval '30 minutes' - g * interval '1 hour', "
        "'row ' || g FROM generate_series(0, 1440) g")
    old = _pg(pg_db, f"SELECT count(*) FROM t WHERE created_at < now() - interval '{DAYS} days'")[0][0]
    settings = _settings(pg_db, tmp_path)
    result = _round_trip(settings, lambda: _pg_table(pg_db), expected=old)
    manifest = json.loads(Path(result.manifest_file).read_text())
    assert manifest["format_version"] == 2
    assert manifest["timestamp_zone"] == zone
    with gzip.open(result.backup_file, "rt", encoding="utf-8") as f:
        stamp = f.read().splitlines()[1].split(",")[1]
    assert "+" not in stamp  # a zone-less value is written as stored, with no invented offset
    # stats buckets use the same predicate: the rows older than DAYS are in the buckets beyond 30 days
    s = stats(settings)
    assert s.total_rows == 1441


def test_a_zone_that_is_not_a_zone_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(BadSetting, match="LOG_TIMESTAMP_TIMEZONE"):
        _settings(f"sqlite:///{tmp_path / 'x.db'}", tmp_path, timestamp_timezone="Mars/Olympus")


# ---------------------------------------------------------------------------
# Keys of any btree type, every column type, generated and identity columns

_TYPES = """
    CREATE TYPE mood AS ENUM ('calm', 'angry');
    CREATE TABLE t (
        {key_columns},
        created_at timestamptz NOT NULL,
        n bigint GENERATED ALWAYS AS IDENTITY,
        meta jsonb, data bytea, tags int[], m mood, span interval, f float8, d numeric, msg text,
        msg_len int GENERATED ALWAYS AS (length(msg)) STORED,
        PRIMARY KEY ({key}));
    INSERT INTO t ({key_insert}, created_at, meta, data, tags, m, span, f, d, msg)
    SELECT {key_values}, now() - g * interval '1 day',
           jsonb_build_object('g', g, 'k', 'a"b'), decode(lpad(to_hex(g), 4, '0') || '00ff', 'hex'),
           ARRAY[g, NULL], (CASE WHEN g % 2 = 0 THEN 'calm' ELSE 'angry' END)::mood, g * interval '61 minutes',
           (ARRAY['NaN', 'Infinity', '-Infinity', '0.1']::float8[])[g % 4 + 1],
           (ARRAY['NaN', '1.50', '-0', '12345678901234567890.123']::numeric[])[g % 4 + 1],
           CASE WHEN g % 5 = 0 THEN NULL ELSE 'line ' || g || E'\\n"quoted", 한국어' END
    FROM generate_series(0, 90) g;
"""

_KEYS = {
    "uuid": ("id uuid", "id", "id", "md5(g::text)::uuid"),
    "text": ("id text COLLATE \"C\"", "id", "id", "'k' || g"),
    "numeric": ("id numeric", "id", "id", "g / 7.0"),
    "composite": ("tenant text, seq int", "tenant, seq", "tenant, seq", "'t' || (g % 3), g"),
}


@pytest.mark.parametrize("kind", list(_KEYS))
def test_keys_of_any_btree_type_walk_and_restore_every_column_exactly(pg_db, tmp_path, kind):
    cols, key, insert, values = _KEYS[kind]
    _pg(pg_db, _TYPES.format(key_columns=cols, key=key, key_insert=insert, key_values=values))
    old = _pg(pg_db, f"SELECT count(*) FROM t WHERE created_at < now() - interval '{DAYS} days'")[0][0]
    settings = _settings(pg_db, tmp_path)
    result = _round_trip(settings, lambda: _pg_table(pg_db, key), expected=old)
    manifest = json.loads(Path(result.manifest_file).read_text())
    assert manifest["primary_key"] == (key if "," not in key else key.split(", "))
    assert {c["name"] for c in manifest["columns"] if c["generated"]} == {"msg_len"}
    assert result.rows_deleted > 2 * settings.batch_size  # several batches walked the key


def test_an_euc_kr_database_is_backed_up_in_utf8(pg_admin_url, tmp_path):
    url = pg_url_for(pg_admin_url, name := f"lrc_test_euckr_{os.getpid()}")
    pg_admin(pg_admin_url, f"CREATE DATABASE {name} ENCODING 'EUC_KR' LC_COLLATE 'C' LC_CTYPE 'C' "
                           "TEMPLATE template0")
    try:
        _pg(url, "CREATE TABLE t (id serial PRIMARY KEY, created_at timestamptz NOT NULL, msg text)",
            "INSERT INTO t (created_at, msg) SELECT now() - g * interval '1 day', '안녕하세요 ' || g "
            "FROM generate_series(0, 60) g")
        settings = _settings(url, tmp_path)
        result = _round_trip(settings, lambda: _pg_table(url))
        with gzip.open(result.backup_file, "rb") as f:
            assert "안녕하세요".encode() in f.read()  # UTF-8 bytes, whatever the server's encoding
    finally:
        dispose_engines()
        pg_admin(pg_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# ---------------------------------------------------------------------------
# A role that may only read


def test_a_select_only_role_reads_dry_runs_and_is_refused_a_run_in_one_line(pg_db, tmp_path):
    role = f"reader_{os.getpid()}"
    name = pg_db.rsplit("/", 1)[1]
    _pg(pg_db, "CREATE TABLE t (id serial PRIMARY KEY, created_at timestamptz NOT NULL)",
        "INSERT INTO t (created_at) SELECT now() - g * interval '1 day' FROM generate_series(0, 60) g",
        f"DROP ROLE IF EXISTS {role}", f"CREATE ROLE {role} LOGIN",
        f"GRANT CONNECT ON DATABASE \"{name}\" TO {role}", f"GRANT SELECT ON t TO {role}",
        f"REVOKE CREATE ON SCHEMA public FROM {role}", "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    try:
        url = pg_db.replace("postgres@", f"{role}@")
        settings = _settings(url, tmp_path)
        assert preview(settings, retention_days=DAYS).rows_to_delete == 21
        assert stats(settings).total_rows == 61
        assert list_history(settings) == []
        dry = run_cleanup(settings, retention_days=DAYS, dry_run=True, notify=False)
        assert (dry.status.value, dry.rows_matched) == ("dry_run", 21)
        env = {**os.environ, "DATABASE_URL": url, "LOG_TABLE": "t", "BACKUP_DIR": str(tmp_path / "b"),
               "PYTHONPATH": str(ROOT)}
        cli = [sys.executable, "-m", "core"]
        for args in (["history"], ["stats"], ["backups"], ["run", "--dry-run", "--no-notify"]):
            done = subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (args, done.stderr)
        done = subprocess.run([*cli, "run", "--no-notify"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1 and "DELETE" in done.stderr
        assert "nexpected" not in done.stderr
        assert _pg(pg_db, "SELECT count(*) FROM t")[0][0] == 61
    finally:
        dispose_engines()
        _pg(pg_db, f"DROP OWNED BY {role}", f"DROP ROLE IF EXISTS {role}")


# ---------------------------------------------------------------------------
# SQLite: storage classes, NULL keys, WITHOUT ROWID


def _sqlite_table(path: Path, order: str = "rowid") -> list[tuple]:
    """Every cell's value and storage class."""
    conn = sqlite3.connect(path)
    try:
        cols = [r[1] for r in conn.execute("PRAGMA table_xinfo(t)")]
        sel = ", ".join(f'"{c}", typeof("{c}")' for c in cols)
        return sorted(conn.execute(f"SELECT {sel} FROM t ORDER BY {order}").fetchall(), key=repr)
    finally:
        conn.close()


def _sqlite_fill(path: Path, ddl: str, rows: list[tuple]) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(ddl)
        marks = ", ".join("?" for _ in rows[0])
        conn.executemany(f"INSERT INTO t VALUES ({marks})", rows)
    conn.close()


def _stamp(days_ago: int) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) - timedelta(days=days_ago, minutes=30)).strftime("%Y-%m-%d %H:%M:%S.%f")


def test_sqlite_cells_come_back_in_their_storage_class_and_null_keys_are_archived(tmp_path):
    path = tmp_path / "shapes.db"
    mixed = [1, 2.5, "3", b"\x00\xff", None, 7.0, -9, "", float("inf"), "x"]
    rows = [
        (None if i % 9 == 0 else f"k{i}", _stamp(i), i, i / 3, bytes([i, 0, 255]), mixed[i % len(mixed)],
         str(i) if i % 4 else None)
        for i in range(80)
    ]
    _sqlite_fill(path, "CREATE TABLE t (id TEXT PRIMARY KEY, created_at TEXT, i INTEGER, r REAL, b BLOB, "
                       "anything, n NUMERIC, g INTEGER GENERATED ALWAYS AS (i * 2) STORED)", rows)
    settings = _settings(f"sqlite:///{path}", tmp_path)
    old = sum(1 for i in range(80) if i >= DAYS)
    result = _round_trip(settings, lambda: _sqlite_table(path), expected=old)
    manifest = json.loads(Path(result.manifest_file).read_text())
    assert [c["type"] for c in manifest["columns"]][:5] == ["TEXT", "TEXT", "INTEGER", "REAL", "BLOB"]
    assert "blob" in manifest["csv"]["sqlite_values"]


def test_sqlite_without_rowid_composite_keys_round_trip(tmp_path):
    path = tmp_path / "wr.db"
    rows = [(f"t{i % 3}", i, _stamp(i), i * 1.5, None if i % 7 == 0 else f"m{i}") for i in range(70)]
    _sqlite_fill(path, "CREATE TABLE t (tenant TEXT, seq INTEGER, created_at TEXT, v, msg TEXT, "
                       "PRIMARY KEY (tenant, seq)) WITHOUT ROWID", rows)
    settings = _settings(f"sqlite:///{path}", tmp_path)
    _round_trip(settings, lambda: _sqlite_table(path, "tenant, seq"), expected=sum(1 for i in range(70) if i >= DAYS))


def test_sqlite_zone_setting_reads_stored_text_as_wall_time(tmp_path):
    path = tmp_path / "seoul.db"
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    now_seoul = datetime.now(UTC).astimezone(ZoneInfo("Asia/Seoul")).replace(tzinfo=None)
    # Seoul wall times every hour around the cutoff: 9 hours of them are old only in Seoul's reading.
    rows = [(i, (now_seoul - timedelta(days=DAYS, minutes=30) + timedelta(hours=12 - i)).strftime(
        "%Y-%m-%d %H:%M:%S")) for i in range(25)]
    _sqlite_fill(path, "CREATE TABLE t (id INTEGER PRIMARY KEY, created_at TEXT)", rows)
    utc = _settings(f"sqlite:///{path}", tmp_path)
    seoul = _settings(f"sqlite:///{path}", tmp_path, timestamp_timezone="Asia/Seoul")
    assert preview(seoul, retention_days=DAYS).rows_to_delete == 13  # hours 12..0 back from the cutoff
    assert preview(utc, retention_days=DAYS).rows_to_delete == 13 - 9
    _round_trip(seoul, lambda: _sqlite_table(path), expected=13)
