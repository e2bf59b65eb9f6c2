"""Fault scenario: the HTTP trigger (the real server), the CLI and the dashboard's start fired
together on one table. Exactly one cleanup runs; the others are told and change nothing.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import text

import core
from core import list_backups
from core.db import get_engine
from tests.support.databases import TABLE, history_rows, kind_of, table_snapshot
from tests.support.invariants import check_no_loss, check_settled
from tests.support.locks import lock_holder_seen, writes_blocked
from tests.support.processes import one_line_error, start_cli, start_server

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("no_proxy")]


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


def test_concurrent_entry_points_run_exactly_one_cleanup(demo_settings, tmp_path: Path, scenario_stats):
    """The HTTP trigger, the CLI and the dashboard's start fired together on one table: exactly one
    cleanup runs (history), the others are told (409, exit 3, the job's error) and change nothing.

    Rounds: in "http", "cli", "dashboard" that entry point is fired first and holds the lock (its
    writes blocked) while the other two are fired together; in "all at once" all three are fired
    together and any may win. New old rows are added before each round."""
    settings = demo_settings
    core.run_cleanup(settings, dry_run=True)  # the history table exists before writes are blocked
    server = start_server(settings, tmp_path / "server", CLEANUP_TRIGGER_TOKEN=TRIGGER_TOKEN,
                          CLEANUP_BATCH_SIZE="100")
    st = scenario_stats.get(f"concurrent entry points, {kind_of(settings)}")
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
