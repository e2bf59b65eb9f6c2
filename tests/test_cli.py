"""The command line as cron and CI call it: real entry point, exit codes, JSON, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from core.cli import main
from core.db import SqliteFileLock, get_engine, lock_key, pg_try_lock
from tests.support import ROOT
from tests.support.databases import table_snapshot

RUN_KEYS = {"run_id", "status", "cutoff", "rows_archived", "rows_deleted", "backup_file", "manifest_file",
            "sha256", "notification", "duration_s"}


def cli(settings, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m core`` in a subprocess, against ``settings``' database and backup folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE_", "LOG_", "BACKUP_"))}
    env.update(DATABASE_URL=settings.database_url, BACKUP_DIR=settings.backup_dir, PYTHONPATH=str(ROOT))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "core", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=settings.backup_dir.rsplit("/", 1)[0])


def test_run_json_has_the_documented_fields_and_exit_0(demo_settings):
    p = cli(demo_settings, "run", "--json", "--no-notify")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert RUN_KEYS <= set(out)
    assert out["status"] == "success" and out["rows_deleted"] == out["rows_archived"] > 0
    assert out["cutoff"].endswith("+00:00") and out["notification"] == "skipped"
    v = cli(demo_settings, "verify", out["backup_file"], "--json")
    assert v.returncode == 0 and json.loads(v.stdout)["ok"] is True
    assert json.loads(v.stdout)["rows"] == out["rows_archived"]


def test_every_command_answers_json(demo_settings):
    for args, keys in [
        (["stats"], {"total_rows", "oldest", "newest", "buckets", "per_day"}),
        (["preview", "--retention-days", "30"], {"cutoff", "rows_to_delete", "oldest", "newest"}),
        (["run", "--dry-run"], {"status"}),
        (["backups"], {"backups"}),
        (["history"], {"runs"}),
    ]:
        p = cli(demo_settings, *args, "--json")
        assert p.returncode == 0, (args, p.stderr)
        assert keys <= set(json.loads(p.stdout)), args
    run = json.loads(cli(demo_settings, "run", "--json", "--no-notify").stdout)
    r = cli(demo_settings, "restore", run["backup_file"], "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout) | {} and {"rows_restored", "rows_skipped"} <= set(json.loads(r.stdout))
    assert json.loads(r.stdout)["rows_restored"] == run["rows_deleted"]
    again = json.loads(cli(demo_settings, "restore", run["backup_file"], "--json").stdout)
    assert again["rows_restored"] == 0 and again["rows_skipped"] == run["rows_deleted"]


def test_preview_matches_what_run_deletes(demo_settings, capsys):
    assert main(["preview", "--cutoff", "2026-10-01T00:00:00", "--json", "--env-file", "/nonexistent",
                 "--database-url", demo_settings.database_url, "--backup-dir", demo_settings.backup_dir]) == 0
    preview = json.loads(capsys.readouterr().out)
    assert preview["cutoff"] == "2026-10-01T00:00:00+00:00"
    assert main(["run", "--cutoff", "2026-10-01T00:00:00", "--json", "--no-notify", "--env-file", "/nonexistent",
                 "--database-url", demo_settings.database_url, "--backup-dir", demo_settings.backup_dir]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["rows_deleted"] == preview["rows_to_delete"]


def _hold_lock(settings):
    """Take the table's cleanup lock here; returns the function that gives it back.

    On PostgreSQL the release unlocks explicitly before closing: a closed session's backend
    drops its advisory locks only when it has exited, some time after the close returns
    (under load, ``pg_locks`` still showed the lock in 79 of 200 tries), so a check right
    after a mere close could still see it held.
    """
    if settings.database_url.startswith("sqlite"):
        lock = SqliteFileLock(settings)
        lock.acquire()
        return lock.release
    raw = get_engine(settings).raw_connection()
    key = lock_key(settings)
    assert pg_try_lock(raw.driver_connection, key)

    def release() -> None:
        with raw.driver_connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
            assert cur.fetchone()[0] is True  # released when this statement returns: no race with the exit
        raw.driver_connection.commit()
        raw.invalidate()

    return release


def test_second_cleanup_exits_3_and_changes_nothing(demo_settings):
    before = table_snapshot(demo_settings)
    release = _hold_lock(demo_settings)
    try:
        p = cli(demo_settings, "run", "--json")
    finally:
        release()
    assert p.returncode == 3
    assert p.stderr.count("\n") == 1 and "another cleanup" in p.stderr and "Traceback" not in p.stderr
    assert table_snapshot(demo_settings) == before
    assert cli(demo_settings, "run", "--json", "--no-notify").returncode == 0  # the lock is free again


@pytest.mark.parametrize(
    "args, env, setting",
    [
        (["preview", "--retention-days", "-3"], {}, "--retention-days"),
        (["preview", "--retention-days", "abc"], {}, "--retention-days"),
        (["preview"], {"LOG_RETENTION_DAYS": "-1"}, "LOG_RETENTION_DAYS"),
        (["preview"], {"LOG_RETENTION_DAYS": "thirty"}, "LOG_RETENTION_DAYS"),
        (["run", "--cutoff", "2999-01-01"], {}, "--cutoff"),
        (["run", "--cutoff", "yesterday"], {}, "--cutoff"),
        (["run", "--table", "no_such_table"], {}, "LOG_TABLE"),
        (["run", "--table", "conversation_log; DROP TABLE conversation_log"], {}, "LOG_TABLE"),
        (["run", "--table", 'x"; DELETE FROM conversation_log; --'], {}, "LOG_TABLE"),
        (["run", "--timestamp-column", "nope"], {}, "LOG_TIMESTAMP_COLUMN"),
        (["run", "--timestamp-column", "created_at) OR (1=1"], {}, "LOG_TIMESTAMP_COLUMN"),
        (["run", "--database-url", "postgresql+psycopg2://u:secretpw@127.0.0.1:1/x"], {}, "DATABASE_URL"),
        (["run", "--backup-dir", "/dev/null/backups"], {}, "BACKUP_DIR"),
        (["run", "--batch-size", "0"], {}, "--batch-size"),
        (["run"], {"CLEANUP_BATCH_SIZE": "lots"}, "CLEANUP_BATCH_SIZE"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(demo_settings, args, env, setting):
    before = table_snapshot(demo_settings)
    p = cli(demo_settings, *args, env_extra=env)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1, p.stderr
    assert setting in p.stderr and "Traceback" not in p.stderr
    assert "secretpw" not in p.stderr
    assert p.stdout == ""
    assert table_snapshot(demo_settings) == before


def test_bad_input_writes_no_backup_and_no_history(demo_settings):
    p = cli(demo_settings, "run", "--cutoff", "2999-01-01", "--json")
    assert p.returncode == 2
    assert not any(n.endswith(".csv.gz") for n in os.listdir(demo_settings.backup_dir)) if os.path.isdir(
        demo_settings.backup_dir) else True
    with get_engine(demo_settings).connect() as conn:
        has = get_engine(demo_settings).dialect.has_table(conn, "retention_runs")
        assert not has or conn.execute(text("SELECT count(*) FROM retention_runs")).scalar() == 0


def test_run_is_quiet_on_success_for_cron(demo_settings):
    p = cli(demo_settings, "run", "--no-notify")
    assert p.returncode == 0 and p.stdout == "" and p.stderr == ""
    v = cli(demo_settings, "run", "--no-notify", "--retention-days", "5", "-v")
    assert v.returncode == 0 and "to a verified backup and deleted" in v.stdout


def test_verify_of_a_tampered_backup_exits_1(demo_settings):
    out = json.loads(cli(demo_settings, "run", "--json", "--no-notify").stdout)
    with open(out["backup_file"], "r+b") as f:
        f.seek(30)
        b = f.read(1)
        f.seek(30)
        f.write(bytes([b[0] ^ 0xFF]))
    p = cli(demo_settings, "verify", out["backup_file"], "--json")
    assert p.returncode == 1 and json.loads(p.stdout)["ok"] is False
    assert p.stderr.count("\n") == 1


def test_path_outside_backup_dir_is_refused(demo_settings):
    cli(demo_settings, "run", "--no-notify")
    for name in ("../test.db", "/etc/passwd", "../../etc/passwd", "nope.csv.gz"):
        p = cli(demo_settings, "verify", name)
        assert p.returncode == 2 and "backup" in p.stderr, (name, p.stderr)
        r = cli(demo_settings, "restore", name)
        assert r.returncode == 2, name


def test_errors_show_no_traceback_unless_debug(demo_settings):
    p = cli(demo_settings, "run", "--table", "missing_table")
    assert "Traceback" not in p.stderr
    d = cli(demo_settings, "run", "--table", "missing_table", "--debug")
    assert d.returncode != 0 and "Traceback" in d.stderr


def test_restore_waits_for_no_cleanup_and_exits_3_while_one_runs(demo_settings):
    out = json.loads(cli(demo_settings, "run", "--json", "--no-notify").stdout)
    before = table_snapshot(demo_settings)
    release = _hold_lock(demo_settings)
    try:
        p = cli(demo_settings, "restore", out["backup_file"], "--json")
    finally:
        release()
    assert p.returncode == 3 and "another cleanup" in p.stderr
    assert table_snapshot(demo_settings) == before


def test_cleanup_running_sees_a_held_lock_without_taking_it(demo_settings):
    from core import cleanup_running

    assert cleanup_running(demo_settings) is False
    release = _hold_lock(demo_settings)
    try:
        assert cleanup_running(demo_settings) is True
    finally:
        release()
    assert cleanup_running(demo_settings) is False
