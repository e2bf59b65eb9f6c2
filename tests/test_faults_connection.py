"""Fault trials: the database connection lost mid-run.

- ``pg_terminate_backend`` of the running cleanup's connection (odd trials: of every
  connection of the database), after a seeded number of committed batches, with numbers
  (``LRC_PG_TERMINATE_TRIALS``, default 6; the lab of tests/support/trials.py).
- The database failing between two batches, before the next one's gzip member began.

Every trial ends with the invariant checks of ``tests/support/invariants.py``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

import core.batches
from core import run_cleanup, verify_backup
from core.demo import demo_data
from tests.support.databases import RETENTION_DAYS, history_rows, make_settings, pg_admin, table_snapshot
from tests.support.invariants import backup_keys, check_instant, check_settled
from tests.support.locks import wait_lock_free
from tests.support.processes import one_line_error, start_cli
from tests.support.report import SEED
from tests.support.trials import Lab, plan, run_args

pytestmark = pytest.mark.faults

TERMINATE_TRIALS = int(os.environ.get("LRC_PG_TERMINATE_TRIALS", "6"))


def _run_backend_pids(admin_url: str, dbname: str) -> list[int]:
    """The cleanup's own connection: the backend holding the advisory lock in ``dbname``."""
    (rows,) = pg_admin(admin_url,
                       "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                       f"WHERE l.locktype = 'advisory' AND l.granted AND d.datname = '{dbname}'")
    return [r[0] for r in rows]


@pytest.mark.parametrize("trial", range(TERMINATE_TRIALS),
                         ids=[f"trial{i:03d}-seed{SEED + i}" for i in range(TERMINATE_TRIALS)])
def test_postgresql_connection_terminated_mid_run_loses_nothing(request, lab: Lab, trial: int, tmp_path: Path):
    """pg_terminate_backend of the run's connection (odd trials: of every connection of the
    database) while it archives: exit 1 with one line, history 'failed' with the reason,
    the committed batches in a finished backup that verifies, the next run succeeds."""
    kind = "postgresql"
    tmpl = lab.template(request, kind)
    stats = lab.stat("terminate", "pg_terminate_backend, postgresql")
    rnd, batch, _ = plan("terminate", trial, TERMINATE_TRIALS)
    everyone = bool(trial % 2)
    where = (f"terminate trial {trial}, seed {SEED + trial} (batch size {batch}, "
             f"{'every connection' if everyone else 'the run connection'})")
    with lab.trial(tmpl, tmp_path / "trial", stats, where) as t:
        s = t.settings
        t.label = f"trial {trial}, batch {batch}"
        dbname = make_url(s.database_url).database
        child = start_cli(s, *run_args(batch))
        # Wait until the run is archiving (it holds the lock and a few batches committed), then strike.
        target_batches = rnd.randint(0, 8)
        deadline = time.monotonic() + 60
        struck = False
        while child.proc.poll() is None and time.monotonic() < deadline:
            pids = _run_backend_pids(tmpl.admin_url or "", dbname)
            runs = [r for r in history_rows(s) if r["status"] == "running"] if pids else []
            if pids and runs and int(runs[0]["batches"] or 0) >= target_batches:
                time.sleep(rnd.random() * 0.05)
                if everyone:
                    pg_admin(tmpl.admin_url or "", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()")
                else:
                    pg_admin(tmpl.admin_url or "", *[f"SELECT pg_terminate_backend({p})" for p in pids])
                struck = True
                break
            time.sleep(0.01)
        rc = child.wait()
        t.struck = rc != 0
        history = {r["run_id"]: r for r in history_rows(s)}
        if rc == 0:  # it finished between our look and the strike
            stats.phases["finished before the strike"] += 1
        else:
            assert struck and rc == 1, (rc, child.stderr)
            line = one_line_error(child.stderr)
            assert "failed" in line and ("terminat" in line or "connection" in line), line
            (run,) = history.values()
            assert run["status"] in ("failed", "interrupted"), run
            assert run["error"], run
            stats.phases[f"history '{run['status']}' with batches committed"
                         if int(run["batches"]) else f"history '{run['status']}' before any batch committed"] += 1
            lab.struck_after.append(int(run["batches"]))
            done = sorted(lab.struck_after)
            stats.notes[:] = [f"struck after {done[0]} to {done[-1]} committed batches "
                              f"(median {done[len(done) // 2]})"]
        wait_lock_free(s)
        t.instant = check_instant(s, tmpl.keys)
        result = run_cleanup(s, retention_days=RETENTION_DAYS, notify=False)
        assert result.status in ("success", "nothing_to_do"), result.error
        check_settled(s, tmpl.keys, tmpl.snapshot, fingerprint=tmpl.fingerprint)


def test_a_batch_failing_before_its_member_began_keeps_the_committed_ones(tmp_path: Path, monkeypatch):
    """The database fails while choosing the third batch (before its gzip member began): the two
    committed members stay in the file, whose backup is finished and verifies. (Found by the
    pg_terminate_backend trials: the rollback of the failed batch cut the previous, committed
    member, whose rows the database had already deleted.)"""
    s = make_settings(f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "backups")
    demo_data(s, rows=600, days=90, seed=12)
    original = set(table_snapshot(s))
    real_one, calls = core.batches._one, {"n": 0}

    def failing_one(conn, sql, args):
        calls["n"] += 1
        if calls["n"] == 5:  # the count, the upper key, batch 1, batch 2, then the choice of batch 3
            raise sqlite3.OperationalError("disk I/O error")
        return real_one(conn, sql, args)

    monkeypatch.setattr(core.batches, "_one", failing_one)
    r = run_cleanup(s, notify=False, batch_size=50)
    monkeypatch.setattr(core.batches, "_one", real_one)
    assert r.status == "failed" and r.rows_deleted == 100, (r.status, r.rows_deleted, r.error)
    assert "completed and verified" in r.error, r.error
    assert verify_backup(s, r.backup_file).ok and len(backup_keys(r.backup_file)) == 100
    check_settled(s, original, None, restore=False)
