"""Faults other than kill -9 (see test_faults_kill.py): concurrent writers, a full disk, Slack
outages, concurrent entry points and hostile input. Run alone with ``pytest -m faults``.

Every scenario ends with the invariant checks of ``faults_helpers``: every original row
is in the table or in exactly one backup that verifies, never both, and nothing is left
looking complete that is not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from faults_helpers import (
    TABLE,
    Stats,
    check_instant,
    check_settled,
    lock_holder_seen,
    make_settings,
    one_line_error,
    run_cli,
    start_cli,
    start_server,
    start_writer,
    write_summary,
    writes_blocked,
)
from sqlalchemy import JSON, BigInteger, Column, DateTime, Integer, LargeBinary, MetaData, Table, Text, text

import core
from core import (
    BackupMismatch,
    BackupNotFound,
    BadSetting,
    RestoreError,
    list_backups,
    list_history,
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
from fakeslack import TOKEN, FakeSlack, Reply, closed_port
from helpers import backup_keys, check_no_loss, table_snapshot

pytestmark = pytest.mark.faults

STATS: dict[str, Stats] = {}


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    write_summary(request.config, "fault scenarios", list(STATS.values()))


def stat(key: str) -> Stats:
    return STATS.setdefault(key, Stats(key))


def kind_of(settings) -> str:
    return "sqlite" if settings.database_url.startswith("sqlite") else "postgresql"


@pytest.fixture
def pg_settings(pg_url: str, tmp_path) -> Any:
    """Settings on PostgreSQL only, for the cases that exist on one database."""
    return load_settings({"database_url": pg_url, "backup_dir": str(tmp_path / "backups"), "batch_size": 100},
                         environ={}, env_file=None)


def history_rows(settings) -> list[dict[str, Any]]:
    from faults_helpers import _history_rows

    return _history_rows(settings)


# ---------------------------------------------------------------------------
# 2. Concurrent writers in another process


@pytest.mark.parametrize("seed", [7])
def test_writers_in_another_process_lose_nothing(settings, tmp_path: Path, seed: int):
    """While cleanups run (small batches, in their own process), a writer process inserts rows
    (some old), updates messages, and moves rows across the cutoff both ways. Afterwards every
    row is in the table or in exactly one backup; each updated row is there in its last version;
    no row that a writer had made new was archived in that new version."""
    rows = 4000
    demo_data(settings, rows=rows, days=90, seed=seed)
    original = set(table_snapshot(settings))
    writer, log, stop = start_writer(settings, tmp_path, seed, id_base=1_000_000, max_id=rows)
    t0 = time.monotonic()
    try:
        time.sleep(0.3)
        for batch in ("50", "120"):
            p = run_cli(settings, "run", "--batch-size", batch, "--no-notify", "--json")
            assert p.returncode == 0, p.stderr
            assert json.loads(p.stdout)["status"] in ("success", "nothing_to_do")
    finally:
        stop.touch()
        writer.wait(timeout=60)
    assert writer.returncode == 0
    final = run_cleanup(settings, notify=False)  # what the writer left old
    assert final.status in ("success", "nothing_to_do"), final.error

    entries = [json.loads(line) for line in log.read_text().splitlines()]
    inserted = {str(e["id"]) for e in entries if e["op"] == "insert"}
    last: dict[str, dict] = {}
    for e in entries:
        last[str(e["id"])] = e
    assert len(entries) > 50 and any(e["op"] == "make new" for e in entries), len(entries)
    counts = check_no_loss(settings, original | inserted)
    check_settled(settings, original | inserted, None, restore=False)

    with get_engine(settings).connect() as conn:
        table = {str(k): m for k, m in conn.execute(text(f"SELECT id, message FROM {TABLE}"))}
    archived: dict[str, str | None] = {}
    for b in list_backups(settings):
        it = iter_records(b.file)
        mi = next(it).index("message")
        for rec in it:
            archived[rec[0]] = rec[mi]
    for key, e in last.items():
        if key in archived:
            assert archived[key] == e["msg"], f"row {key} archived in an older version than {e}"
            assert e["old"] is not False, f"row {key} was archived although the writer had made it new: {e}"
        else:
            assert table[key] == e["msg"], f"row {key} is in the table in an older version than {e}"
    s = stat(f"concurrent writer, {kind_of(settings)}")
    s.add(f"seed {seed}", time.monotonic() - t0)
    s.rows_checked += len(original | inserted)
    s.notes.append(f"{len(entries)} committed writes ({len(inserted)} inserts, "
                   f"{sum(e['op'] != 'insert' for e in entries)} updates) during 2 cleanups; "
                   f"{counts['in_backups']} rows archived, 0 lost, every updated row in its last version")


# ---------------------------------------------------------------------------
# 3. Disk full during the backup write (RLIMIT_FSIZE)


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


def test_a_batch_failing_before_its_member_began_keeps_the_committed_ones(tmp_path: Path, monkeypatch):
    """The database fails while choosing the third batch (before its gzip member began): the two
    committed members stay in the file, whose backup is finished and verifies. (Found by the
    pg_terminate_backend trials: the rollback of the failed batch cut the previous, committed
    member, whose rows the database had already deleted.)"""
    import core.batches

    s = make_settings(f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "backups")
    demo_data(s, rows=600, days=90, seed=12)
    original = set(table_snapshot(s))
    real_one, calls = core.batches._one, {"n": 0}

    def failing_one(conn, sql, args):
        calls["n"] += 1
        if calls["n"] == 4:  # the count, batch 1, batch 2, then the choice of batch 3
            raise sqlite3.OperationalError("disk I/O error")
        return real_one(conn, sql, args)

    monkeypatch.setattr(core.batches, "_one", failing_one)
    r = run_cleanup(s, notify=False, batch_size=50)
    monkeypatch.setattr(core.batches, "_one", real_one)
    assert r.status == "failed" and r.rows_deleted == 100, (r.status, r.rows_deleted, r.error)
    assert "completed and verified" in r.error, r.error
    assert verify_backup(s, r.backup_file).ok and len(backup_keys(r.backup_file)) == 100
    check_settled(s, original, None, restore=False)


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


# ---------------------------------------------------------------------------
# 5. Slack down, slow or rate-limiting throughout


SLACK_METHODS = ("conversations.list", "chat.postMessage", "files.getUploadURLExternal",
                 "files.completeUploadExternal", "upload", "webhook")


@pytest.fixture
def sqlite_demo(tmp_path: Path):
    s = make_settings(f"sqlite:///{tmp_path / 'slack.db'}", tmp_path / "backups")
    demo_data(s, rows=600, days=90, seed=9)
    return s


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    core.notify.clear_channel_cache()


@pytest.mark.parametrize("outage", ["500", "hang", "429 forever", "refused", "webhook 500", "webhook hang",
                                    "429 twice, then fine"])
def test_slack_outage_never_fails_or_stalls_a_cleanup(sqlite_demo, outage: str):
    timeout = 5.0 if outage == "429 twice, then fine" else 1.0
    with FakeSlack() as slack:
        base = slack.api_url if outage != "refused" else f"http://127.0.0.1:{closed_port()}/api/"
        if outage.startswith("webhook"):
            s = dataclasses.replace(sqlite_demo, slack_webhook_url=slack.webhook_url, slack_timeout_s=timeout)
        else:
            s = dataclasses.replace(sqlite_demo, slack_bot_token=TOKEN, slack_api_base_url=base,
                                    slack_timeout_s=timeout)
        reply = {"500": Reply(500, body="upstream down"), "webhook 500": Reply(500, body="upstream down"),
                 "hang": Reply(data={"ok": True}, stall=60), "webhook hang": Reply(body="ok", stall=60),
                 "429 forever": Reply(429, data={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "1"}),
                 }.get(outage)
        if reply is not None:
            for method in SLACK_METHODS:
                slack.always(method, reply)
        if outage == "429 twice, then fine":
            limited = Reply(429, data={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "1"})
            slack.script("conversations.list", limited)
            slack.script("chat.postMessage", limited)
        original = set(table_snapshot(s))
        for attempt in range(2):  # a cleanup, then one with nothing to do (also reported)
            t0 = time.monotonic()
            r = run_cleanup(s, notify=True)
            elapsed = time.monotonic() - t0
            assert r.status == ("success" if attempt == 0 else "nothing_to_do"), r.error
            assert elapsed < timeout + 4, f"{outage}: the run took {elapsed:.1f} s with SLACK_TIMEOUT_S={timeout}"
            row = next(h for h in list_history(s) if h.run_id == r.run_id)
            if outage == "429 twice, then fine":
                assert r.notification == row.notification == "sent", r.notification_detail
                break
            assert r.notification == row.notification == "failed", (r.notification, r.notification_detail)
            assert row.notification_detail and TOKEN not in row.notification_detail
            assert row.status == r.status
    counts = check_no_loss(s, original)
    assert counts["in_backups"] > 0
    st = stat("Slack outages (sqlite)")
    st.add(outage, elapsed)
    st.rows_checked += len(original)


def test_slack_down_on_postgresql_too(pg_settings):
    demo_settings = pg_settings
    demo_data(demo_settings, rows=600, days=90, seed=7)
    with FakeSlack() as slack:
        for method in SLACK_METHODS:
            slack.always(method, Reply(503, body="down"))
        s = dataclasses.replace(demo_settings, slack_bot_token=TOKEN, slack_api_base_url=slack.api_url,
                                slack_timeout_s=2.0)
        original = set(table_snapshot(s))
        t0 = time.monotonic()
        r = run_cleanup(s, notify=True)
        assert r.status == "success" and r.notification == "failed", r
        assert time.monotonic() - t0 < 8
    assert list_history(s)[0].notification == "failed"
    check_no_loss(s, original)


# ---------------------------------------------------------------------------
# 6. Concurrent entry points: HTTP trigger, CLI, dashboard


TRIGGER_TOKEN = "faults-" + os.urandom(8).hex()


def _fire(entry: str, settings, server, outcomes: dict[str, Any]) -> Any:
    """Start one entry point; returns a handle to wait on."""
    if entry == "http":
        r = requests.post(server.base + "/run-cleanup", headers={"Authorization": f"Bearer {TRIGGER_TOKEN}"},
                          timeout=30)
        outcomes["http"] = r
        return r
    if entry == "cli":
        child = start_cli(settings, "run", "--no-notify", "--json")
        outcomes["cli"] = child
        return child
    from ui import jobs

    job = jobs.start(settings, cutoff=datetime.now(UTC) - timedelta(days=30), dry_run=False, rows_expected=0)
    outcomes["dashboard"] = job
    return job


def _refused(entry: str, handle: Any, timeout: float = 30) -> bool | None:
    """True if the entry point was told another cleanup runs, False if it started one, None if undecided."""
    if entry == "http":
        assert handle.status_code in (202, 409), handle.text
        if handle.status_code == 409:
            assert "another cleanup" in handle.json()["error"]
        return handle.status_code == 409
    if entry == "cli":
        if handle.proc.poll() is None:
            return None
        if handle.proc.returncode == 3:
            assert "another cleanup" in one_line_error(handle.stderr)
            return True
        assert handle.proc.returncode == 0, handle.stderr
        return False
    if handle.running:
        return None
    if handle.error:
        assert "another cleanup" in handle.error, handle.error
        return True
    return False


ROUNDS = ("all at once", "http", "cli", "dashboard", "all at once")


def test_concurrent_entry_points_run_exactly_one_cleanup(demo_settings, tmp_path: Path):
    """The HTTP trigger, the CLI and the dashboard's start fired together on one table: exactly one
    cleanup runs (history), the others are told (409, exit 3, the job's error) and change nothing.

    Rounds: in "http", "cli", "dashboard" that entry point is fired first and holds the lock (its
    writes blocked) while the other two are fired together; in "all at once" all three are fired
    together and any may win. New old rows are added before each round."""
    settings = demo_settings
    core.run_cleanup(settings, dry_run=True)  # the history table exists before writes are blocked
    server = start_server(settings, tmp_path / "server", CLEANUP_TRIGGER_TOKEN=TRIGGER_TOKEN,
                          CLEANUP_BATCH_SIZE="100")
    st = stat(f"concurrent entry points, {kind_of(settings)}")
    try:
        for i, first in enumerate(ROUNDS):
            t0 = time.monotonic()
            try:
                winner = _entry_point_round(settings, server, first, seed=100 + i)
            except BaseException as exc:
                raise AssertionError(f"round {i} ({first}): {type(exc).__name__}: {exc}\n{server.log()[-3000:]}") \
                    from exc
            st.add(f"round {i}: {first}", time.monotonic() - t0)
            st.phases[f"{winner} ran, the other two were told"] += 1
            st.rows_checked += len(table_snapshot(settings)) + sum(b.rows for b in list_backups(settings))
    finally:
        server.stop()


def _add_rows(settings, first_id: int, n: int) -> None:
    """Rows with fresh keys (SQLite would reuse the key of a deleted last row for an implicit id),
    two thirds older than the cutoff."""
    engine = get_engine(settings)
    pg = engine.dialect.name == "postgresql"
    now = datetime.now(UTC)
    rows = []
    for i in range(n):
        ts = now - timedelta(days=90 * (i + 0.5) / n)
        rows.append({"i": first_id + i, "m": f"row {first_id + i}", "t": ts if pg else ts.replace(tzinfo=None)})
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO {TABLE} (id, session_id, role, message, created_at) "
                          "VALUES (:i, 'round', 'user', :m, :t)"), rows)


def _entry_point_round(settings, server, first: str, seed: int) -> str:
    _add_rows(settings, first_id=seed * 1000, n=300)  # more old rows for this round
    original = set(table_snapshot(settings))
    before = {r["run_id"] for r in history_rows(settings)}
    entries = ["http", "cli", "dashboard"]
    outcomes: dict[str, Any] = {}
    with writes_blocked(settings) as block:
        if first != "all at once":
            _fire(first, settings, server, outcomes)
            deadline = time.monotonic() + 30
            while not lock_holder_seen(settings):
                assert time.monotonic() < deadline, f"{first} never took the lock"
                time.sleep(0.02)
        rest = [e for e in entries if e not in outcomes]
        threads = [threading.Thread(target=_fire, args=(e, settings, server, outcomes)) for e in rest]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        # Wait until the two others have answered (the winner waits on the blocked write).
        deadline = time.monotonic() + 30
        while True:
            told = {e: _refused(e, outcomes[e]) for e in entries}
            if sum(v is True for v in told.values()) == 2:  # (a 202 is a start, not an end)
                break
            assert time.monotonic() < deadline, f"undecided: {told}"
            time.sleep(0.05)
        block.release()
    deadline = time.monotonic() + 60  # the winner finishes
    while None in (told := {e: _refused(e, outcomes[e]) for e in entries}).values():
        assert time.monotonic() < deadline, told
        time.sleep(0.05)
    winners = [e for e, refused in told.items() if not refused]
    assert len(winners) == 1, told
    if first != "all at once":
        assert winners == [first], told
    winner = winners[0]
    if winner == "http":
        run_id = outcomes["http"].json()["run_id"]
        deadline = time.monotonic() + 60
        while True:
            body = requests.get(f"{server.base}/runs/{run_id}", timeout=10,
                                headers={"Authorization": f"Bearer {TRIGGER_TOKEN}"}).json()
            if body["status"] != "running" and body.get("notification") != "pending":
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
    new = [r for r in history_rows(settings) if r["run_id"] not in before]
    assert len(new) == 1, new
    assert new[0]["status"] == "success" and new[0]["trigger"] == winner, new[0]
    check_no_loss(settings, original)
    check_settled(settings, original, None, restore=False)
    return winner


# ---------------------------------------------------------------------------
# 7. Hostile input


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
        expires = int(time.time()) + 60
        query = {"name": name, "kind": kind, "expires": str(expires),
                 "sig": sig if sig is not None else downloads.sign(name, kind, expires)}
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
    assert p.returncode == 1 and "other_log" in one_line_error(p.stderr)
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
                 ["--cutoff", "now"], ["--retention-days", "-1"], ["--cutoff", "0001-01-01T00:00:00+14:00"]):
        code, out, err = _cli(demo_settings, capsys, "run", "--no-notify", *args)
        assert code == 2 and err.count("\n") == 1, (args, err)
    with pytest.raises(BadSetting):
        run_cleanup(demo_settings, cutoff=datetime.now(UTC) + timedelta(seconds=30), notify=False)
    with pytest.raises(BadSetting):
        load_settings({"retention_days": 10**9}, environ={}, env_file=None)
    # 0999: a year before 1000 once compared as text "999-..." > "2026-..." on SQLite (all rows "older")
    for args in (["--cutoff", "1900-01-01T00:00:00Z"], ["--cutoff", "0999-01-01"], ["--cutoff", "0001-01-01"],
                 ["--retention-days", "365000"]):
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

