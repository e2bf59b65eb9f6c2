"""The cleanup routine on both databases: exact round trips, cutoff boundaries, safety."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import JSON, BigInteger, Column, DateTime, Integer, MetaData, Table, Text, text
from sqlalchemy.dialects.postgresql import JSONB

from core import list_backups, list_history, restore_backup, run_cleanup, verify_backup
from core.backup.deflate import codec_for
from core.db import get_engine
from core.demo import demo_data
from core.timefmt import parse_db_timestamp
from tests.support.databases import table_snapshot
from tests.support.invariants import backup_keys, check_no_loss

CUTOFF = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)

TRICKY = [
    (1, None, "", 0, {"a": 1}, CUTOFF - timedelta(days=3)),
    (2, "", None, None, None, CUTOFF - timedelta(days=2)),
    (3, "안녕하세요, \"따옴표\" 그리고 쉼표,", "줄\r\n바꿈", -5, {"k": "값", "emoji": "🎉"}, CUTOFF - timedelta(hours=1)),
    (4, "emoji 😀👍🏽 and \"quotes\", commas\nnewline", "\\N", 7, [1, "two", None], CUTOFF - timedelta(microseconds=1)),
    (5, "exactly at the cutoff stays", "x", 1, {}, CUTOFF),
    (6, "after the cutoff stays", "y", 2, None, CUTOFF + timedelta(microseconds=1)),
    (7, "=cmd|' /C calc'!A0", "NULL", 3, {"nested": {"deep": [1, 2]}}, CUTOFF - timedelta(days=400)),
    (8, "   spaces kept   ", "\t", None, None, CUTOFF - timedelta(seconds=1)),
]


def make_tricky_table(settings) -> Table:
    engine = get_engine(settings)
    pg = engine.dialect.name == "postgresql"
    t = Table(
        "conversation_log", MetaData(),
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("message", Text), Column("note", Text), Column("n", Integer),
        Column("meta", JSONB if pg else JSON),
        Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    )
    t.metadata.create_all(engine)
    rows = []
    for id_, msg, note, n, meta, ts in TRICKY:
        rows.append({"id": id_, "message": msg, "note": note, "n": n, "meta": meta,
                     "created_at": ts if pg else ts.replace(tzinfo=None)})
    with engine.begin() as conn:
        conn.execute(t.insert(), rows)
    return t


def test_row_exactly_at_cutoff_is_kept_and_one_microsecond_older_goes(settings):
    make_tricky_table(settings)
    result = run_cleanup(settings, cutoff=CUTOFF, notify=False)
    assert result.status == "success"
    left = set(table_snapshot(settings))
    assert left == {"5", "6"}
    assert sorted(backup_keys(result.backup_file), key=int) == ["1", "2", "3", "4", "7", "8"]


def test_restore_puts_tricky_rows_back_exactly(settings):
    make_tricky_table(settings)
    before = table_snapshot(settings)
    result = run_cleanup(settings, cutoff=CUTOFF, notify=False)
    assert result.rows_deleted == 6
    restored = restore_backup(settings, result.backup_file)
    assert (restored.rows_restored, restored.rows_skipped) == (6, 0)
    assert table_snapshot(settings) == before
    again = restore_backup(settings, result.backup_file)
    assert (again.rows_restored, again.rows_skipped) == (0, 6)
    assert table_snapshot(settings) == before


def test_backup_keeps_null_apart_from_empty_string(settings):
    make_tricky_table(settings)
    result = run_cleanup(settings, cutoff=CUTOFF, notify=False)
    with gzip.open(result.backup_file, "rt", encoding="utf-8", newline="") as f:
        text_ = f.read()
    lines = text_.split("\n")
    assert lines[0] == "id,message,note,n,meta,created_at"
    row1 = next(line for line in lines if line.startswith("1,"))
    row2 = next(line for line in lines if line.startswith("2,"))
    assert row1.startswith('1,,"",0,')  # NULL message, empty note
    assert row2.startswith('2,"",,,')  # empty message, NULL note, NULL n
    stamp = row1.rsplit(",", 1)[1]
    if settings.database_url.startswith("sqlite"):
        assert stamp == '"2026-05-29 12:00:00.000000"'  # SQLite text, zone-less: written as stored
    else:
        assert "+00" in stamp  # timestamptz carries an explicit UTC offset


def test_backup_reloads_into_postgresql_with_plain_copy(settings, pg_url):
    """Whatever database made it, COPY ... FROM (FORMAT csv, HEADER true) reloads the rows exactly."""
    make_tricky_table(settings)
    result = run_cleanup(settings, cutoff=CUTOFF, notify=False)
    engine = get_engine(settings.with_overrides(database_url=pg_url))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE reload (id bigint primary key, message text, note text, n int, "
                          "meta jsonb, created_at timestamptz)"))
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur, gzip.open(result.backup_file, "rb") as f:
            cur.copy_expert("COPY reload FROM STDIN WITH (FORMAT csv, HEADER true)", f)
        raw.commit()
    finally:
        raw.close()
    with engine.connect() as conn:
        got = {r[0]: r[1:] for r in conn.execute(text(
            "SELECT id, message, note, n, meta, created_at FROM reload ORDER BY id")).all()}
    expected = {row[0]: row[1:] for row in TRICKY if row[5] < CUTOFF}
    assert set(got) == set(expected)
    for key, (msg, note, n, meta, ts) in expected.items():
        assert got[key] == (msg, note, n, meta, ts), key


def test_two_runs_in_one_second_write_two_files(demo_settings):
    first = run_cleanup(demo_settings, retention_days=60, notify=False)
    second = run_cleanup(demo_settings, retention_days=20, notify=False)
    assert first.status == second.status == "success"
    assert first.backup_file != second.backup_file
    assert len(list_backups(demo_settings)) == 2
    assert all(verify_backup(demo_settings, b.file).ok for b in list_backups(demo_settings))


def test_manifest_describes_the_backup(demo_settings):
    r = run_cleanup(demo_settings, retention_days=30, notify=False)
    m = json.loads(open(r.manifest_file, encoding="utf-8").read())
    for key in ("table", "timestamp_column", "primary_key", "columns", "cutoff", "rows", "sha256",
                "min_timestamp", "max_timestamp", "created_at", "run_id", "format_version"):
        assert key in m, key
    assert m["rows"] == r.rows_archived and m["sha256"] == r.sha256 and m["run_id"] == r.run_id
    assert [c["name"] for c in m["columns"]][0] == "id"
    assert datetime.fromisoformat(m["max_timestamp"]) < datetime.fromisoformat(m["cutoff"])
    assert m["compression"]["format"] == "gzip" and m["compression"]["deflate"] == codec_for(1).library


def test_many_batches_archive_everything_once(demo_settings):
    original = set(table_snapshot(demo_settings))
    r = run_cleanup(demo_settings, retention_days=30, batch_size=7, notify=False)
    assert r.rows_deleted > 300
    counts = check_no_loss(demo_settings, original)
    assert counts["in_backups"] == r.rows_deleted


def test_nothing_to_do_writes_no_file(demo_settings):
    r = run_cleanup(demo_settings, retention_days=1000, notify=False)
    assert r.status == "nothing_to_do" and r.backup_file is None and r.rows_deleted == 0
    assert list_backups(demo_settings) == []
    assert list_history(demo_settings)[0].status == "nothing_to_do"


def test_dry_run_changes_nothing(demo_settings):
    before = table_snapshot(demo_settings)
    r = run_cleanup(demo_settings, retention_days=30, dry_run=True)
    assert r.status == "dry_run" and r.rows_matched > 0 and r.rows_deleted == 0
    assert table_snapshot(demo_settings) == before
    assert list_backups(demo_settings) == []


def test_rows_written_during_a_run_are_never_lost(demo_settings):
    """Old rows inserted and old rows updated between batches stay or are archived in their new version."""
    engine = get_engine(demo_settings)
    original = set(table_snapshot(demo_settings))
    pg = engine.dialect.name == "postgresql"
    old = datetime.now(UTC) - timedelta(days=80)
    inserted: list[int] = []
    updated: dict[str, str] = {}
    calls = {"n": 0}

    def writer(done: int, total: int) -> None:
        calls["n"] += 1
        with engine.begin() as conn:
            new_id = 100_000 + calls["n"]
            conn.execute(text("INSERT INTO conversation_log (id, session_id, role, message, created_at) "
                              "VALUES (:i, 's', 'user', 'late arrival', :ts)"),
                         {"i": new_id, "ts": old if pg else old.replace(tzinfo=None)})
            inserted.append(new_id)
            # update the highest-keyed old row still in the table
            row = conn.execute(text("SELECT max(id) FROM conversation_log WHERE created_at < :c AND id < 100000"),
                               {"c": old if pg else old.replace(tzinfo=None).isoformat(sep=" ")}).scalar()
            if row is not None:
                conn.execute(text("UPDATE conversation_log SET message = :m WHERE id = :i"),
                             {"m": f"edited {calls['n']}", "i": row})
                updated[str(row)] = f"edited {calls['n']}"

    r = run_cleanup(demo_settings, retention_days=30, batch_size=40, notify=False, progress=writer)
    assert r.status == "success" and calls["n"] > 3
    check_no_loss(demo_settings, original | {str(i) for i in inserted})
    # an updated row is either still in the table with the new text, or archived with it
    table = table_snapshot(demo_settings)
    archived = {}
    for b in list_backups(demo_settings):
        from core.backup.csvfile import iter_records

        it = iter_records(b.file)
        header = next(it)
        mi = header.index("message")
        archived.update({rec[0]: rec[mi] for rec in it})
    for key, msg in updated.items():
        if key in archived:
            assert archived[key] == msg, f"row {key} archived in an old version"
        else:
            assert msg in str(table[key])


def test_history_records_each_run(demo_settings):
    run_cleanup(demo_settings, retention_days=30, notify=False, trigger="dashboard")
    runs = list_history(demo_settings)
    assert runs[0].status == "success" and runs[0].trigger == "dashboard"
    assert runs[0].rows_deleted == runs[0].rows_archived > 0
    assert runs[0].sha256 and runs[0].backup_file and runs[0].notification == "skipped"


@pytest.mark.parametrize("fmt", ["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%d %H:%M:%S",
                                 "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f+00:00"])
def test_sqlite_text_timestamps_compare_in_their_own_form(tmp_path, fmt):
    from core.config import load_settings

    s = load_settings({"database_url": f"sqlite:///{tmp_path / 'ts.db'}", "backup_dir": str(tmp_path / "b")},
                      environ={}, env_file=None)
    engine = get_engine(s)
    cutoff = datetime(2026, 3, 1, 0, 0, 0, 500000, tzinfo=UTC)
    stamps = [cutoff - timedelta(seconds=1), cutoff - timedelta(microseconds=1), cutoff, cutoff + timedelta(seconds=1),
              cutoff - timedelta(days=30)]
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE conversation_log (id INTEGER PRIMARY KEY, created_at TEXT)"))
        conn.execute(text("CREATE INDEX ix_ts ON conversation_log (created_at)"))
        for i, ts in enumerate(stamps):
            conn.execute(text("INSERT INTO conversation_log VALUES (:i, :t)"), {"i": i, "t": ts.strftime(fmt)})
    r = run_cleanup(s, cutoff=cutoff, notify=False)
    # which stored values are strictly older than the cutoff, as times (whole-second forms lose the .5 s)
    expected = {str(i) for i, ts in enumerate(stamps)
                if datetime.strptime(ts.strftime(fmt).replace("+00:00", "").replace("Z", ""),
                                     fmt.replace("+00:00", "").replace("Z", "")).replace(tzinfo=UTC) < cutoff}
    assert set(backup_keys(r.backup_file)) == expected
    restore_backup(s, r.backup_file)
    with engine.connect() as conn:
        back = dict(conn.execute(text("SELECT id, created_at FROM conversation_log")).all())
    assert back == {i: ts.strftime(fmt) for i, ts in enumerate(stamps)}


def test_sqlite_table_mixing_timestamp_forms_is_refused(tmp_path):
    from core.config import load_settings
    from core.errors import BadSetting

    s = load_settings({"database_url": f"sqlite:///{tmp_path / 'm.db'}", "backup_dir": str(tmp_path / "b")},
                      environ={}, env_file=None)
    with get_engine(s).begin() as conn:
        conn.execute(text("CREATE TABLE conversation_log (id INTEGER PRIMARY KEY, created_at TEXT)"))
        conn.execute(text("INSERT INTO conversation_log VALUES (1, '2026-01-01 00:00:00'), "
                          "(2, '2026-01-02T00:00:00Z'), (3, '2026-01-03 00:00:00')"))
    with pytest.raises(BadSetting, match="LOG_TIMESTAMP_COLUMN"):
        run_cleanup(s, cutoff="2026-02-01", notify=False)
    with get_engine(s).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM conversation_log")).scalar() == 3


def test_demo_data_is_realistic(settings):
    r = demo_data(settings, rows=300, days=90)
    assert r.rows_inserted == 300 and r.created_table
    with get_engine(settings).connect() as conn:
        msgs = [m for (m,) in conn.execute(text("SELECT message FROM conversation_log"))]
        nulls = conn.execute(text("SELECT count(*) FROM conversation_log WHERE model IS NULL")).scalar()
        span = conn.execute(text("SELECT min(created_at), max(created_at) FROM conversation_log")).one()
    text_ = "".join(m for m in msgs if m)
    assert any("\uac00" <= ch <= "\ud7a3" for ch in text_)  # Korean
    assert any(ch.isascii() and ch.isalpha() for ch in text_)  # English
    assert "\n" in text_ and '"' in text_ and "," in text_
    assert nulls > 0
    lo, hi = (parse_db_timestamp(v) for v in span)
    assert (hi - lo) > timedelta(days=60)
