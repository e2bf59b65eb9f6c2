"""Fault trials with numbers: kill -9 at random moments.

Each trial copies a realistic table (``LRC_FAULT_ROWS``, default 20,000 demo rows
over 90 days; about two thirds are older than the 30-day cutoff), starts
``python -m core run --batch-size N --no-notify`` (N log-uniform in 50..500) as a
subprocess and kills it (SIGKILL) at a seeded random moment spread over the whole
run, as measured on unkilled runs. Then:

1. the state at that instant already satisfies the invariant (``check_instant``);
2. a normal run recovers the dead one and completes (on odd trials ``list_history``, as
   the dashboard's History page does, first shows it "awaiting recovery" and writes
   nothing; on every fourth trial a first recovering run is itself killed early, and
   checked again). Killers, readers and recoverers each spell the database URL and the
   table differently (``respelled``): they must still meet one lock and one history;
3. ``check_settled``: nothing running, no partial file, every backup verifies, every
   original row is in the table or in exactly one backup (``check_no_loss`` on the
   control runs and every fifth trial, the same invariant read by keys only on the
   others), and restoring every backup gives back exactly the original table.

``LRC_KILL_TRIALS`` (default 25 per database) sets the count, ``LRC_FAULT_SEED`` the
seed; a failure names its trial, seed and kill moment. The numbers are printed at the
end of the session. The lab (templates, run-time model) is ``tests/support/trials.py``;
connections killed by PostgreSQL are in test_faults_connection.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from core import LockHeld, list_history, run_cleanup
from core.config import Settings
from tests.support.databases import RETENTION_DAYS, Template, history_rows
from tests.support.invariants import Instant, check_instant, check_settled
from tests.support.locks import wait_lock_free
from tests.support.processes import Child, cli_env, start_cli
from tests.support.report import KILL_TRIALS, SEED
from tests.support.trials import Lab, plan, respelled, run_args

pytestmark = pytest.mark.faults

KINDS = ["sqlite", "postgresql"]
STARTUP_SHARE = 0.15  # of the trials strike while the interpreter starts and imports


def moment_for(u: float, startup: float, expected: float) -> float:
    """Seconds after the start at which to strike, for ``u`` in [0, 1) drawn by ``plan``.

    The first 15% of u map onto the interpreter's start and imports (``startup`` seconds,
    where a kill can only hit before the run began); the rest onto the run proper, from the
    end of the imports to 1.05 x the expected duration (connect, lock, recovery, count, every
    batch, finishing the backup, the history update, exit; a few land after the end and
    check a clean finish).
    """
    if u < STARTUP_SHARE:
        return u / STARTUP_SHARE * startup
    return startup + (u - STARTUP_SHARE) / (1 - STARTUP_SHARE) * max(0.05, 1.05 * expected - startup)


def strike_at(child: Child, moment: float) -> bool:
    """Wait until ``moment`` seconds after the child started, unless it exits first; True if still running."""
    left = child.started + moment - time.monotonic()
    if left > 0:
        try:
            child.proc.wait(timeout=left)
            return False
        except Exception:  # TimeoutExpired: still running, strike now
            pass
    return child.proc.poll() is None


def phase_of(inst: Instant, killed: bool) -> str:
    """Where the run was when it was killed, as the disk and the history show it."""
    if not killed:
        return "finished before the kill"
    if not inst.runs:
        return "startup, lock or count (no run row yet)"
    run = inst.runs[0]
    if run["status"] != "running":
        return f"after the run was recorded '{run['status']}'"
    if int(run["rows_deleted"] or 0) == 0:
        return "first batch (nothing committed yet)"
    if inst.uncommitted_tail:
        return "mid-batch (uncommitted member on disk)"
    if run["backup_file"] and Path(run["backup_file"]).exists():
        return "finishing the backup (renamed, history not yet updated)"
    return "between batches (after a commit)"


def recover_and_finish(s: Settings, tmpl: Template, trial: int) -> Any:
    """Recover the dead run (odd trials: through list_history first) and run a normal cleanup."""
    wait_lock_free(s)
    dead = [r["run_id"] for r in history_rows(s) if r["status"] == "running"]
    if trial % 2:  # reading the history (under another spelling) shows the dead run and writes nothing
        before = history_rows(s)
        runs = {r.run_id: r for r in list_history(respelled(s, trial + 1, cli=False))}
        for run_id in dead:
            assert runs[run_id].status == "running" and runs[run_id].awaiting_recovery, runs[run_id]
        assert history_rows(s) == before
        check_instant(s, tmpl.keys)
    deadline = time.monotonic() + 30
    while True:
        try:
            result = run_cleanup(respelled(s, trial + 2, cli=False), retention_days=RETENTION_DAYS, notify=False)
            break
        except LockHeld:
            assert time.monotonic() < deadline, "the lock of a dead run was never released"
            time.sleep(0.1)
    assert result.status in ("success", "nothing_to_do"), result.error
    assert set(dead) <= set(result.recovered_runs), (dead, result.recovered_runs)
    statuses = {r["run_id"]: r["status"] for r in history_rows(s)}
    for run_id in dead:
        assert statuses[run_id] == "interrupted", statuses
    return result



# ---------------------------------------------------------------------------
# kill -9


@pytest.mark.parametrize("trial", range(KILL_TRIALS), ids=[f"trial{i:03d}-seed{SEED + i}" for i in range(KILL_TRIALS)])
@pytest.mark.parametrize("kind", KINDS)
def test_kill_9_at_a_random_moment_loses_nothing(request, lab: Lab, kind: str, trial: int, tmp_path: Path):
    tmpl = lab.template(request, kind)
    stats = lab.stat(f"kill-{kind}", f"kill -9, {kind}")
    rnd, batch, u = plan(kind, trial, KILL_TRIALS)
    expected = lab.duration(request, kind, batch)
    moment = moment_for(u, lab.startup(), expected)
    where = (f"kill trial {trial} on {kind}, seed {SEED + trial} (batch size {batch}, SIGKILL at {moment:.3f} s = "
             f"u={u:.3f}; imports take {lab.startup():.2f} s, the run {expected:.2f} s); reproduce with LRC_FAULT_SEED={SEED} "
             f"LRC_KILL_TRIALS={KILL_TRIALS} pytest -m faults -k '{kind} and seed{SEED + trial}'")
    with lab.trial(tmpl, tmp_path / "trial", stats, where) as t:
        s = t.settings
        t.label = f"trial {trial}, batch {batch}, kill at {moment:.2f} s"
        child = start_cli(respelled(s, trial, cli=True), *run_args(batch))
        killed = t.struck = strike_at(child, moment) and child.kill()
        if not killed:
            assert child.proc.returncode == 0, child.stderr
            lab.observed(kind, batch, time.monotonic() - child.started)
        wait_lock_free(s)
        inst = t.instant = check_instant(s, tmpl.keys)
        stats.phases[phase_of(inst, killed)] += 1
        if killed and trial % 4 == 3:
            # Kill the next run too, early: while it recovers the first (cut, verify, manifest, rename,
            # history) or starts its own batches. Recovery must survive its own interruption.
            second = start_cli(respelled(s, trial + 1, cli=True), *run_args(batch))
            if strike_at(second, lab.startup() + rnd.uniform(0.0, 0.4)) and second.kill():
                wait_lock_free(s)
                check_instant(s, tmpl.keys)
                stats.phases["(and the recovering run killed too)"] += 1
            else:
                assert second.proc.returncode == 0, second.stderr
        recover_and_finish(s, tmpl, trial)
        check_settled(s, tmpl.keys, tmpl.snapshot, fingerprint=tmpl.fingerprint, fast=bool(trial % 5))


# A child where every SQLite batch is cut short: under CLEANUP_BATCH_TARGET_MS=100 it stops
# reading after 20 ms (SQLITE_READ_SHARE 0.2 instead of 0.55) while the size still aims at
# 70 ms, its rows encode slowly (8 ms per 250), and it pauses 20 ms between batches instead
# of 100 (most of the run is inside batches). Each batch so archives and deletes only the
# rows it read (core.batches, the cut-short path). Test hook: the child sets these module
# values of core.pacing and replaces core.batches.make_rows_encoder, then runs the CLI.
SLOW_CHILD = """
import sys, time
import core.batches as batches
import core.pacing as pacing
pacing.SQLITE_READ_SHARE, pacing.SQLITE_FAIR_PAUSE_S = 0.2, 0.02
fast = batches.make_rows_encoder
def slow(types):
    encode = fast(types)
    def rows(chunk):
        time.sleep(0.008)
        return encode(chunk)
    return rows
batches.make_rows_encoder = slow
from core.cli import main
sys.exit(main(sys.argv[1:]))
"""
CUT_MOMENTS = (0.1, 0.3, 0.5, 0.7, 0.9, 1.1, 1.3, 1.5)  # seconds after the imports, over the whole run


@pytest.mark.parametrize("after", CUT_MOMENTS, ids=[f"at{m:.2f}s" for m in CUT_MOMENTS])
def test_kill_9_among_sqlite_batches_cut_short_by_the_time_target_loses_nothing(request, lab: Lab, after: float,
                                                                               tmp_path: Path):
    """Killed among batches cut short by the time target (mid-batch, between batches), nothing
    is lost, and the next run recovers the dead one and finishes."""
    tmpl = lab.template(request, "sqlite")
    stats = lab.stat("kill-cut", "kill -9 among batches cut short by CLEANUP_BATCH_TARGET_MS, sqlite")
    moment = lab.startup() + after
    where = f"cut-short kill at {moment:.2f} s (imports {lab.startup():.2f} s)"
    with lab.trial(tmpl, tmp_path / "trial", stats, where) as t:
        s = t.settings
        t.label = f"slow rows, target 100 ms, kill at {moment:.2f} s"
        home = Path(s.backup_dir).parent
        with (home / "cli.out").open("wb") as out, (home / "cli.err").open("wb") as err:
            t0 = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-c", SLOW_CHILD, *run_args(5000), "--env-file", os.devnull],
                                    env=cli_env(s, CLEANUP_BATCH_TARGET_MS="100"), cwd=home, stdout=out, stderr=err)
        child = Child(proc, t0, home / "cli.out", home / "cli.err")
        killed = t.struck = strike_at(child, moment) and child.kill()
        if not killed:
            assert child.proc.returncode == 0, child.stderr
        wait_lock_free(s)
        inst = t.instant = check_instant(s, tmpl.keys)
        stats.phases[phase_of(inst, killed)] += 1
        recover_and_finish(s, tmpl, 0)
        check_settled(s, tmpl.keys, tmpl.snapshot, fingerprint=tmpl.fingerprint)
