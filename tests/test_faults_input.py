"""Fault scenario: hostile input. SQL in table and column names, hostile column names inside
the database, path traversal in backup names, backups that lie, a backup of another table,
huge messages, invalid UTF-8, impossible cutoffs, binary data.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import shutil
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, Column, DateTime, Integer, LargeBinary, MetaData, Table, Text, text

import core
from core import (
    BackupMismatch,
    BackupNotFound,
    BadSetting,
    RestoreError,
    resolve_backup,
    restore_backup,
    run_cleanup,
    verify_backup,
)
from core.backup.csvfile import iter_records
from core.cli import main as cli_main
from core.config import load_settings
from core.db import get_engine
from core.demo import demo_data
from tests.support.databases import TABLE, history_rows, make_settings, table_snapshot
from tests.support.invariants import backup_keys, check_instant
from tests.support.processes import one_line_error, run_cli

pytestmark = pytest.mark.faults


def _cli(settings, capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = cli_main([*args, "--env-file", os.devnull, "--database-url", settings.database_url,
                         "--backup-dir", settings.backup_dir])
    except SystemExit as exc:  # argparse refuses bad usage this way (exit 2)
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("flag, value", [
    ("--table", "conversation_log; DROP TABLE conversation_log"),
    ("--table", "conversation_log WHERE 1=1 --"),
    ("--table", 'conversation_log"; DELETE FROM conversation_log; --'),
    ("--table", "public.conversation_log; --"),
    ("--table", "a.b.c"),
    ("--table", "con\u200bversation_log"),
    ("--table", "x" * 200),
    ("--timestamp-column", "created_at < now() OR 1=1"),
    ("--timestamp-column", "created_at`; --"),
    ("--timestamp-column", "created_at)/*"),
])
def test_sql_in_table_or_column_names_is_refused(demo_settings, capsys, flag: str, value: str):
    before = table_snapshot(demo_settings)
    for cmd in (["run", "--no-notify"], ["preview"], ["stats"], ["run", "--dry-run"]):
        code, out, err = _cli(demo_settings, capsys, *cmd, flag, value)
        assert code == 2, (cmd, err)
        assert err.count("\n") == 1 and ("LOG_TABLE" in err or "LOG_TIMESTAMP_COLUMN" in err), err
        assert out == ""
    assert table_snapshot(demo_settings) == before
    assert not history_rows(demo_settings)
    assert not Path(demo_settings.backup_dir).exists() or not any(Path(demo_settings.backup_dir).iterdir())


def test_hostile_column_names_inside_the_database_round_trip(settings):
    """Column names chosen by whoever made the table (quotes, commas, spaces, SQL) are quoted,
    archived in the header and restored exactly."""
    engine = get_engine(settings)
    weird = ['we"ird, col', "DROP TABLE x; --", "select", "with space"]
    t = Table(TABLE, MetaData(), Column("id", Integer, primary_key=True),
              *[Column(n, Text) for n in weird], Column("created_at", DateTime(timezone=True), nullable=False))
    t.metadata.create_all(engine)
    pg = engine.dialect.name == "postgresql"
    old = datetime.now(UTC) - timedelta(days=60)
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"id": i, **{n: f'{n} "{i}",\n' for n in weird},
                                   "created_at": old if pg else old.replace(tzinfo=None)} for i in range(1, 51)])
    before = table_snapshot(settings)
    r = run_cleanup(settings, notify=False)
    assert r.status == "success" and r.rows_deleted == 50, r.error
    assert next(iter_records(r.backup_file)) == ["id", *weird, "created_at"]
    restore_backup(settings, r.backup_file)
    assert table_snapshot(settings) == before


@pytest.fixture
def archived(tmp_path: Path):
    """A SQLite table with a finished backup, and a file outside BACKUP_DIR to aim at."""
    s = make_settings(f"sqlite:///{tmp_path / 'h.db'}", tmp_path / "backups")
    demo_data(s, rows=600, days=90, seed=21)
    r = run_cleanup(s, notify=False)
    assert r.status == "success"
    secret = tmp_path / "outside.csv.gz"
    shutil.copyfile(r.backup_file, secret)
    shutil.copyfile(r.manifest_file, tmp_path / "outside.manifest.json")
    return s, Path(r.backup_file), secret


def _traversal_names(s, backup: Path, secret: Path) -> list[str]:
    base = Path(s.backup_dir)
    link = base / "link.csv.gz"
    link.symlink_to(secret)
    shutil.copyfile(backup.with_name(backup.name.replace(".csv.gz", ".manifest.json")),
                    base / "link.manifest.json")
    (base / "dir.csv.gz").mkdir()
    return ["../outside.csv.gz", str(secret), f"{base}/../outside.csv.gz", "..%2foutside.csv.gz",
            "link.csv.gz", "dir.csv.gz", "", "\x00", backup.name + "\x00.txt", "/etc/passwd", "../h.db",
            backup.name.replace(".csv.gz", ".manifest.json"), "~/outside.csv.gz", "nope.csv.gz"]


def test_path_traversal_in_backup_names_is_refused_everywhere(archived, capsys, monkeypatch):
    s, backup, secret = archived
    before = table_snapshot(s)
    for name in _traversal_names(s, backup, secret):
        with pytest.raises(BackupNotFound):
            resolve_backup(s, name)
        with pytest.raises(BackupNotFound):
            verify_backup(s, name)
        with pytest.raises(BackupNotFound):
            restore_backup(s, name)
        if "\x00" not in name and name:
            for cmd in ("verify", "restore"):
                code, _, err = _cli(s, capsys, cmd, name)
                assert code == 2 and err.count("\n") == 1 and "backup" in err, (cmd, name, err)
    assert table_snapshot(s) == before
    # The dashboard's streamed download route re-resolves the name: even a correctly signed
    # link to a hostile name (which the pages never make) gets a 404, and a bad signature 403.
    from starlette.requests import Request

    from ui import downloads

    monkeypatch.setenv("DATABASE_URL", s.database_url)
    monkeypatch.setenv("BACKUP_DIR", s.backup_dir)
    monkeypatch.chdir(Path(s.backup_dir).parent)
    (route,) = downloads.routes()

    def get(name: str, kind: str = "backup", sig: str | None = None) -> Any:
        expires, grant = int(time.time()) + 60, downloads.session_grant()  # a live grant, as a session's
        query = {"name": name, "kind": kind, "expires": str(expires), "grant": grant,
                 "sig": sig if sig is not None else downloads.sign(name, kind, expires, grant)}
        from urllib.parse import urlencode

        request = Request({"type": "http", "method": "GET", "path": downloads.ROUTE, "headers": [],
                           "query_string": urlencode(query).encode()})
        return asyncio.run(route.endpoint(request))

    assert get(backup.name).status_code == 200
    assert get(backup.name, sig="0" * 64).status_code == 403
    for name in _traversal_names_existing(s, backup, secret):
        for kind in ("backup", "spreadsheet"):
            assert get(name, kind).status_code == 404, (name, kind)


def _traversal_names_existing(s, backup: Path, secret: Path) -> list[str]:
    return ["../outside.csv.gz", str(secret), f"{s.backup_dir}/../outside.csv.gz", "link.csv.gz", "dir.csv.gz",
            "/etc/passwd", "../h.db", "nope.csv.gz"]


@pytest.mark.parametrize("lie", ["rows", "sha256", "not json", "other columns", "truncated gzip",
                                 "garbage appended", "flipped byte"])
def test_a_backup_that_lies_is_refused(archived, capsys, lie: str):
    s, backup, _ = archived
    manifest = backup.with_name(backup.name.replace(".csv.gz", ".manifest.json"))
    m = json.loads(manifest.read_text())
    restore_backup(s, backup)  # put the rows back: a restore that went through would now skip them all
    rows_back = table_snapshot(s)
    core.run_cleanup(s, notify=False)  # archive them again into a second, honest backup
    honest = table_snapshot(s)
    if lie == "rows":
        manifest.write_text(json.dumps({**m, "rows": m["rows"] + 1}))
    elif lie == "sha256":
        manifest.write_text(json.dumps({**m, "sha256": "0" * 64}))
    elif lie == "not json":
        manifest.write_text("{not json")
    elif lie == "other columns":
        manifest.write_text(json.dumps({**m, "columns": m["columns"][::-1]}))
    elif lie == "truncated gzip":
        data = backup.read_bytes()
        backup.write_bytes(data[: len(data) * 2 // 3])
    elif lie == "garbage appended":
        with backup.open("ab") as f:
            f.write(b"not gzip at all")
    else:
        data = bytearray(backup.read_bytes())
        data[len(data) // 2] ^= 0x40
        backup.write_bytes(bytes(data))
    if lie not in ("not json", "other columns"):
        v = verify_backup(s, backup)
        assert not v.ok and v.problem, v
        if lie == "truncated gzip":
            assert "cut short" in v.problem or "truncated" in v.problem, v.problem
        code, _, err = _cli(s, capsys, "verify", backup.name)
        assert code == 1 and err.count("\n") == 1 and "does not verify" in err, err
    with pytest.raises((BackupMismatch, RestoreError)) as exc:
        restore_backup(s, backup)
    assert "\n" not in exc.value.one_line()
    code, _, err = _cli(s, capsys, "restore", backup.name)
    assert code == 1 and err.count("\n") == 1, err
    assert table_snapshot(s) == honest != rows_back


def test_a_backup_of_another_table_is_refused_by_restore(settings, tmp_path: Path):
    demo_data(settings, rows=300, days=90, seed=1)
    other = settings.with_overrides(table="other_log")
    demo_data(other, rows=300, days=90, seed=2)
    r = run_cleanup(other, notify=False)  # same database, same BACKUP_DIR
    assert r.status == "success"
    before = table_snapshot(settings)
    with pytest.raises(RestoreError, match="other_log"):
        restore_backup(settings, Path(r.backup_file).name)
    assert table_snapshot(settings) == before
    p = run_cli(settings, "restore", Path(r.backup_file).name)
    assert p.returncode == 2 and "other_log" in one_line_error(p.stderr)  # another table: refused (SPEC), exit 2
    assert table_snapshot(settings) == before


def test_a_10_mb_message_is_archived_and_restored_exactly(settings):
    demo_data(settings, rows=50, days=90, seed=4)
    engine = get_engine(settings)
    rnd = random.Random(10)
    alphabet = 'ab,"\n\r\t \\한국어😀é\x01' + "x" * 20
    piece = "".join(rnd.choice(alphabet) for _ in range(1 << 16))
    big = piece * (10 * 1024 * 1024 // len(piece.encode()) + 1) + '""' + "\\N"
    assert len(big.encode()) > 10 * 1024 * 1024
    old = datetime.now(UTC) - timedelta(days=200)
    pg = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO {TABLE} (id, session_id, role, message, created_at) "
                          "VALUES (999999, 's', 'user', :m, :t)"), {"m": big, "t": old if pg else old.replace(tzinfo=None)})
    before = table_snapshot(settings)
    r = run_cleanup(settings, notify=False, batch_size=7)
    assert r.status == "success" and "999999" in backup_keys(r.backup_file)
    assert verify_backup(settings, r.backup_file).ok
    restore_backup(settings, r.backup_file)
    assert table_snapshot(settings) == before
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT message FROM {TABLE} WHERE id = 999999")).scalar() == big


@pytest.mark.parametrize("where", ["first old row", "middle"])
def test_invalid_utf8_in_sqlite_is_refused_clearly(tmp_path: Path, where: str):
    """A row whose text is not UTF-8 cannot be archived as UTF-8 CSV: the run stops at it with
    one clear line (exit 1), deletes nothing that is not in a verified backup, leaves that row and
    everything after it, and stays recorded as failed."""
    s = make_settings(f"sqlite:///{tmp_path / 'u.db'}", tmp_path / "backups")
    demo_data(s, rows=2000, days=90, seed=6)
    db = sqlite3.connect(tmp_path / "u.db")
    cutoff = (datetime.now(UTC) - timedelta(days=30)).replace(tzinfo=None).isoformat(sep=" ")
    bad_id = db.execute("SELECT min(id) FROM conversation_log WHERE created_at < ?", (cutoff,)).fetchone()[0]
    if where == "middle":
        bad_id = db.execute("SELECT id FROM conversation_log WHERE created_at < ? ORDER BY id LIMIT 1 OFFSET 700",
                            (cutoff,)).fetchone()[0]
    db.execute("UPDATE conversation_log SET message = CAST(x'fffe41' AS TEXT) WHERE id = ?", (bad_id,))
    db.commit()
    db.close()
    keys = {str(k) for k in range(1, 2001)}
    t0 = time.monotonic()
    p = run_cli(s, "run", "--batch-size", "100", "--no-notify")
    assert time.monotonic() - t0 < 20, "the failure took the busy timeout: a lock was left behind"
    assert p.returncode == 1, p.stderr
    line = one_line_error(p.stderr)
    assert "UTF-8" in line and "message" in line, line
    (run,) = history_rows(s)
    assert run["status"] == "failed" and "UTF-8" in run["error"], run
    inst = check_instant(s, keys)
    with sqlite3.connect(tmp_path / "u.db") as db:
        assert db.execute("SELECT count(*) FROM conversation_log WHERE id = ?", (bad_id,)).fetchone()[0] == 1
    if where == "first old row":
        assert inst.in_table == 2000 and not list(Path(s.backup_dir).glob("*.csv.gz"))
    else:
        assert 0 < inst.in_backups == int(run["rows_deleted"])
    # (check_settled would read whole rows, which the invalid text forbids; check_instant reads keys)
    assert run_cli(s, "run", "--no-notify").returncode == 1  # still refused, still safe
    assert [r["status"] for r in history_rows(s)] == ["failed", "failed"]
    again = check_instant(s, keys)
    assert (again.in_table, again.in_backups) == (inst.in_table, inst.in_backups)


def test_cutoff_in_the_future_is_refused_and_far_past_is_nothing_to_do(demo_settings, capsys):
    before = table_snapshot(demo_settings)
    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    for args in (["--cutoff", future], ["--cutoff", "9999-12-31T23:59:59"], ["--cutoff", "2026-13-01"],
                 ["--cutoff", "now"], ["--retention-days", "-1"], ["--retention-days", "36501"],
                 ["--cutoff", "0001-01-01T00:00:00+14:00"]):
        code, out, err = _cli(demo_settings, capsys, "run", "--no-notify", *args)
        assert code == 2 and err.count("\n") == 1, (args, err)
    with pytest.raises(BadSetting):
        run_cleanup(demo_settings, cutoff=datetime.now(UTC) + timedelta(seconds=30), notify=False)
    with pytest.raises(BadSetting):
        load_settings({"retention_days": 10**9}, environ={}, env_file=None)
    # 0999: a year before 1000 once compared as text "999-..." > "2026-..." on SQLite (all rows "older")
    for args in (["--cutoff", "1900-01-01T00:00:00Z"], ["--cutoff", "0999-01-01"], ["--cutoff", "0001-01-01"],
                 ["--retention-days", "36500"]):
        code, out, err = _cli(demo_settings, capsys, "run", "--no-notify", "--json", *args)
        assert code == 0, (args, err)
        assert json.loads(out)["status"] == "nothing_to_do", (args, out)
    assert table_snapshot(demo_settings) == before
    assert not list(Path(demo_settings.backup_dir).glob("*.csv.gz"))


def test_a_restore_into_a_table_whose_rows_are_back_skips_them(archived):
    """Restoring twice (or after someone re-inserted the rows) never duplicates or overwrites."""
    s, backup, _ = archived
    first = restore_backup(s, backup)
    snap = table_snapshot(s)
    again = restore_backup(s, backup)
    assert (again.rows_restored, again.rows_skipped) == (0, first.rows_restored)
    assert table_snapshot(s) == snap


def test_binary_blob_column_round_trips(tmp_path: Path):
    """Binary data in a SQLite BLOB column is archived as \\x-hex and restored byte for byte."""
    s = make_settings(f"sqlite:///{tmp_path / 'b.db'}", tmp_path / "backups")
    engine = get_engine(s)
    t = Table(TABLE, MetaData(), Column("id", Integer, primary_key=True), Column("payload", LargeBinary),
              Column("meta", JSON), Column("created_at", DateTime(timezone=True), nullable=False))
    t.metadata.create_all(engine)
    old = (datetime.now(UTC) - timedelta(days=100)).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"id": i, "payload": os.urandom(i * 13 % 300), "meta": {"i": i},
                                   "created_at": old} for i in range(1, 301)])
    before = table_snapshot(s)
    r = run_cleanup(s, notify=False, batch_size=31)
    assert r.status == "success" and r.rows_deleted == 300
    with gzip.open(r.backup_file, "rb") as f:
        assert f.read().count(b"\\x") >= 299
    restore_backup(s, r.backup_file)
    assert table_snapshot(s) == before
