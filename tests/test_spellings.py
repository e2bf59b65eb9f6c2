"""Every spelling of one table meets one lock and one history (issue 12, case 1).

Host names (127.0.0.1 / localhost), an omitted port, a ``public.`` prefix; on SQLite a
relative, absolute or symlinked path and another letter case. Readers (history, the
dashboard's data functions, ``backups``) never write, even beside a live run or a dead one.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from core import cleanup_running, list_history, preview
from core.backup import list_backups
from core.cleanup import run_cleanup
from core.config import Settings
from core.db import get_engine
from core.models import RunStatus
from tests.support.databases import kind_of, table_snapshot
from tests.support.invariants import check_no_loss
from tests.support.locks import writes_blocked
from tests.support.processes import run_cli, start_cli


def spellings(s: Settings) -> list[Settings]:
    """Four spellings of the table of ``s`` (the first is ``s`` itself)."""
    url = make_url(s.database_url)
    if kind_of(s) == "sqlite":
        real = Path(url.database)
        link = real.with_name("link-to.db")
        if not link.exists():
            os.symlink(real, link)
        # the CLI runs in the backup folder's parent, where the database file is
        rel = os.path.relpath(real, Path(s.backup_dir).parent)
        return [s, s.with_overrides(database_url=f"sqlite:///{rel}", table="CONVERSATION_LOG"),
                s.with_overrides(database_url=f"sqlite:///{link}"),
                s.with_overrides(database_url=f"sqlite:///{real.parent}/./{real.name}", table="Conversation_Log")]
    other = [url.set(host="localhost"), url.set(host="localhost", port=None), url.set(host="127.0.0.1", port=None)]
    return [s] + [s.with_overrides(database_url=u.render_as_string(hide_password=False),
                                   table="public.conversation_log" if i % 2 == 0 else "conversation_log")
                  for i, u in enumerate(other)]


@pytest.fixture(autouse=True)
def _in_home(demo_settings, monkeypatch):
    """Relative SQLite paths are relative to the working directory: the CLI's, and ours."""
    monkeypatch.chdir(Path(demo_settings.backup_dir).parent)


def all_history(s: Settings) -> list[tuple]:
    with get_engine(s).connect() as conn:
        return sorted(tuple(map(str, r)) for r in conn.execute(text("SELECT * FROM retention_runs")))


def folder(path: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(path).iterdir())}


def test_concurrent_runs_under_every_spelling_one_runs_others_exit_3_nothing_lost(demo_settings):
    s = demo_settings
    original = set(table_snapshot(s))
    names = spellings(s)
    with writes_blocked(s):  # the winner waits at its first write, so every other start overlaps it
        children = [start_cli(x, "run", "--no-notify", "--json", "--batch-size", "50") for x in names]
        deadline = time.monotonic() + 60
        while sum(c.proc.poll() is not None for c in children) < len(children) - 1:
            assert time.monotonic() < deadline, [c.stderr for c in children]
            time.sleep(0.05)
    codes = [c.wait() for c in children]
    assert sorted(codes) == [0, 3, 3, 3], [c.stderr for c in children]
    assert all("another cleanup" in c.stderr for c, code in zip(children, codes, strict=True) if code == 3)
    winner = json.loads(next(c for c, code in zip(children, codes, strict=True) if code == 0).stdout)
    assert winner["status"] == "success" and winner["rows_deleted"] > 0
    assert check_no_loss(s, original)["lost"] == 0
    for x in names:  # every spelling sees the one run
        assert [r.run_id for r in list_history(x)] == [winner["run_id"]]


def test_reading_history_under_another_spelling_during_a_live_run_changes_nothing(demo_settings):
    s = demo_settings
    original = set(table_snapshot(s))
    names = spellings(s)
    in_batches, go_on = threading.Event(), threading.Event()

    def progress(done: int, total: int) -> None:
        if done:  # one batch committed: a running row, a partial file with a journal
            in_batches.set()
            assert go_on.wait(60)

    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(
        run_cleanup(names[1], notify=False, batch_size=50, progress=progress)))
    worker.start()
    try:
        assert in_batches.wait(60)
        before = (all_history(s), folder(s.backup_dir))
        for x in names:
            assert cleanup_running(x)
            runs = list_history(x)
            assert runs[0].status is RunStatus.RUNNING and not runs[0].awaiting_recovery
            list_backups(x)
            preview(x)
            proc = run_cli(x, "history", "--json")
            assert proc.returncode == 0 and json.loads(proc.stdout)["runs"][0]["status"] == "running"
            assert run_cli(x, "backups").returncode == 0
        assert (all_history(s), folder(s.backup_dir)) == before
    finally:
        go_on.set()
        worker.join(120)
    assert outcome and outcome[0].status is RunStatus.SUCCESS
    assert check_no_loss(s, original)["lost"] == 0


def test_dead_run_is_shown_awaiting_recovery_without_writing_until_a_cleanup_recovers_it(demo_settings):
    s = demo_settings
    names = spellings(s)
    first = run_cleanup(names[2], notify=False, dry_run=True)
    with get_engine(s).begin() as conn:  # what a kill -9 leaves: a 'running' row and nobody holding the lock
        conn.execute(text("UPDATE retention_runs SET status = 'running', rows_deleted = 0 WHERE run_id = :r"),
                     {"r": first.run_id})
    before = (all_history(s), folder(s.backup_dir) if Path(s.backup_dir).exists() else {})
    for x in names:
        (run,) = list_history(x)
        assert run.awaiting_recovery and run.status is RunStatus.RUNNING
        proc = run_cli(x, "history")
        assert proc.returncode == 0 and "awaiting recovery" in proc.stdout
    assert (all_history(s), folder(s.backup_dir) if Path(s.backup_dir).exists() else {}) == before
    done = run_cleanup(names[3], notify=False)
    assert done.recovered_runs == (first.run_id,)
    statuses = {r.run_id: (r.status, r.awaiting_recovery) for r in list_history(names[0])}
    assert statuses[first.run_id] == (RunStatus.INTERRUPTED, False)
