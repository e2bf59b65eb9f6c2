"""Fault trials with numbers: kill -9 at random moments, and PostgreSQL connections killed mid-run.

Each trial copies a realistic table (``LRC_FAULT_ROWS``, default 20,000 demo rows
over 90 days; about two thirds are older than the 30-day cutoff), starts
``python -m core run --batch-size N --no-notify`` (N log-uniform in 50..500) as a
subprocess and kills it (SIGKILL, or ``pg_terminate_backend`` of its connection)
at a seeded random moment spread over the whole run, as measured on unkilled
runs. Then:

1. the state at that instant already satisfies the invariant (``check_instant``);
2. a normal run recovers the dead one and completes (on odd trials the recovery
   is done first by ``list_history``, as the dashboard's History page does; on every
   fourth trial a first recovering run is itself killed early, and checked again);
3. ``check_settled``: nothing running, no partial file, every backup verifies, every
   original row is in the table or in exactly one backup (``helpers.check_no_loss`` on
   the control runs and every fifth trial, the same invariant read by keys only on the
   others), and restoring every backup gives back exactly the original table.

``LRC_KILL_TRIALS`` (default 25 per database) and ``LRC_PG_TERMINATE_TRIALS``
(default 6) set the counts, ``LRC_FAULT_SEED`` the seed; a failure names its
trial, seed and kill moment. The numbers are printed at the end of the module.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faults_helpers import (
    KILL_TRIALS,
    RETENTION_DAYS,
    SEED,
    Child,
    Instant,
    Stats,
    Template,
    _history_rows,
    check_instant,
    check_settled,
    one_line_error,
    pg_admin,
    start_cli,
    template_for,
    wait_lock_free,
    write_summary,
)

from conftest import ROOT
from core import LockHeld, list_history, run_cleanup
from core.config import Settings

pytestmark = pytest.mark.faults

TERMINATE_TRIALS = int(os.environ.get("LRC_PG_TERMINATE_TRIALS", "6"))
KINDS = ["sqlite", "postgresql"]
BATCH_MIN, BATCH_MAX = 50, 500


class Lab:
    """Templates, measured run durations and statistics, shared by the module's trials."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.templates: dict[str, Template] = {}
        self.models: dict[str, tuple[float, float]] = {}
        self.ratios: dict[str, list[float]] = {}  # actual / modelled time of runs that were not killed
        self._startup: float | None = None
        self.stats: dict[str, Stats] = {}
        self.struck_after: list[int] = []  # committed batches when pg_terminate_backend struck

    def startup(self) -> float:
        """Seconds from process start to the end of the CLI's imports (``run --help`` exits there)."""
        if self._startup is None:
            times = []
            for _ in range(2):
                t0 = time.monotonic()
                subprocess.run([sys.executable, "-m", "core", "run", "--help"], capture_output=True, check=True,
                               cwd=self.root, env={**os.environ, "PYTHONPATH": str(ROOT)})
                times.append(time.monotonic() - t0)
            self._startup = min(times)
        return self._startup

    def template(self, request: pytest.FixtureRequest, kind: str) -> Template:
        return template_for(request, self.templates, kind,
                            lambda k, admin: Template.build(k, self.root / f"template-{k}", admin))

    def stat(self, key: str, name: str) -> Stats:
        return self.stats.setdefault(key, Stats(name, phase_label="where the fault hit"))

    def duration(self, request: pytest.FixtureRequest, kind: str, batch: int) -> float:
        """Expected wall time of an unkilled CLI run (process start to exit) with this batch size.

        Measured once per database on two control runs (batch sizes 50 and 500, each
        checked like a trial) and modelled as a + b / batch_size.
        """
        if kind not in self.models:
            tmpl = self.template(request, kind)
            measured = {}
            for bs in (BATCH_MIN, BATCH_MAX):
                s = tmpl.copy(self.root / f"control-{kind}-{bs}", batch_size=5000)
                try:
                    child = start_cli(s, *run_args(bs))
                    rc = child.wait()
                    measured[bs] = time.monotonic() - child.started
                    assert rc == 0, child.stderr
                    check_settled(s, tmpl.keys, tmpl.snapshot, fingerprint=tmpl.fingerprint)
                finally:
                    tmpl.drop_copy(s)
            b = max(0.0, (measured[BATCH_MIN] - measured[BATCH_MAX]) / (1 / BATCH_MIN - 1 / BATCH_MAX))
            a = max(0.05, measured[BATCH_MAX] - b / BATCH_MAX)
            self.models[kind] = (a, b)
            self.stat(f"kill-{kind}", f"kill -9, {kind}").notes.append(
                f"unkilled control runs: {measured[BATCH_MIN]:.2f} s at batch size {BATCH_MIN}, "
                f"{measured[BATCH_MAX]:.2f} s at {BATCH_MAX} (process start to exit, "
                f"{tmpl.old_rows:,} of {len(tmpl.keys):,} rows archived); the CLI's imports take "
                f"{self.startup():.2f} s")
        a, b = self.models[kind]
        ratios = sorted(self.ratios.get(kind, []))
        scale = min(1.5, max(0.5, ratios[len(ratios) // 2])) if ratios else 1.0
        return scale * (a + b / batch)

    def observed(self, kind: str, batch: int, seconds: float) -> None:
        """An unkilled run took ``seconds``: correct later trials' timing (machine load varies)."""
        a, b = self.models[kind]
        self.ratios.setdefault(kind, []).append(seconds / (a + b / batch))


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("fault-lab"))
    yield lab
    for tmpl in lab.templates.values():
        tmpl.destroy()
    write_summary(request.config, "fault trials", list(lab.stats.values()))


def run_args(batch: int) -> list[str]:
    return ["run", "--batch-size", str(batch), "--no-notify", "--retention-days", str(RETENTION_DAYS), "--json"]


STARTUP_SHARE = 0.15  # of the trials strike while the interpreter starts and imports


def plan(kind: str, trial: int, trials: int) -> tuple[random.Random, int, float]:
    """(rng, batch size, u in [0, 1): where in the run to strike, see moment_for) for one trial.

    Moments are stratified over the trials: trial i draws u in [i/N, (i+1)/N). The first
    15% of u map onto the interpreter's start and imports (``startup`` seconds, where a
    kill can only hit before the run began); the rest onto the run proper, from the end of
    the imports to 1.05 x the expected duration (connect, lock, recovery, count, every
    batch, finishing the backup, the history update, exit; a few land after the end and
    check a clean finish). Every run of N trials so covers the whole run evenly.
    """
    rnd = random.Random(f"{kind}:{SEED + trial}")
    batch = round(math.exp(rnd.uniform(math.log(BATCH_MIN), math.log(BATCH_MAX))))
    u = (trial % trials + rnd.random()) / trials
    return rnd, batch, u


def moment_for(u: float, startup: float, expected: float) -> float:
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
    dead = [r["run_id"] for r in _history_rows(s) if r["status"] == "running"]
    if trial % 2:
        runs = {r.run_id: r for r in list_history(s)}
        for run_id in dead:
            assert runs[run_id].status == "interrupted", runs[run_id]
        check_instant(s, tmpl.keys)
    deadline = time.monotonic() + 30
    while True:
        try:
            result = run_cleanup(s, retention_days=RETENTION_DAYS, notify=False)
            break
        except LockHeld:
            assert time.monotonic() < deadline, "the lock of a dead run was never released"
            time.sleep(0.1)
    assert result.status in ("success", "nothing_to_do"), result.error
    if not trial % 2:
        assert set(dead) <= set(result.recovered_runs), (dead, result.recovered_runs)
    statuses = {r["run_id"]: r["status"] for r in _history_rows(s)}
    for run_id in dead:
        assert statuses[run_id] == "interrupted", statuses
    return result


# ---------------------------------------------------------------------------
# 1. kill -9


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
    t0 = time.monotonic()
    s = tmpl.copy(tmp_path / "trial", batch_size=5000)
    try:
        child = start_cli(s, *run_args(batch))
        killed = strike_at(child, moment) and child.kill()
        if not killed:
            assert child.proc.returncode == 0, child.stderr
            lab.observed(kind, batch, time.monotonic() - child.started)
        wait_lock_free(s)
        inst = check_instant(s, tmpl.keys)
        stats.phases[phase_of(inst, killed)] += 1
        if killed and trial % 4 == 3:
            # Kill the next run too, early: while it recovers the first (cut, verify, manifest, rename,
            # history) or starts its own batches. Recovery must survive its own interruption.
            second = start_cli(s, *run_args(batch))
            if strike_at(second, lab.startup() + rnd.uniform(0.0, 0.4)) and second.kill():
                wait_lock_free(s)
                check_instant(s, tmpl.keys)
                stats.phases["(and the recovering run killed too)"] += 1
            else:
                assert second.proc.returncode == 0, second.stderr
        recover_and_finish(s, tmpl, trial)
        check_settled(s, tmpl.keys, tmpl.snapshot, fingerprint=tmpl.fingerprint, fast=bool(trial % 5))
    except BaseException as exc:
        stats.rows_lost += Stats.current_lost
        Stats.current_lost = 0
        raise AssertionError(f"{where}: {type(exc).__name__}: {exc}") from exc
    finally:
        tmpl.drop_copy(s)
    stats.add(f"trial {trial}, batch {batch}, kill at {moment:.2f} s", time.monotonic() - t0)
    stats.killed += killed
    stats.finished_first += not killed
    stats.rows_checked += len(tmpl.keys)
    stats.rows_deleted_before_fault += inst.committed + inst.in_backups


# ---------------------------------------------------------------------------
# 4. PostgreSQL connection killed mid-run


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
    t0 = time.monotonic()
    s = tmpl.copy(tmp_path / "trial", batch_size=5000)
    from sqlalchemy.engine import make_url

    dbname = make_url(s.database_url).database
    try:
        child = start_cli(s, *run_args(batch))
        # Wait until the run is archiving (it holds the lock and a few batches committed), then strike.
        target_batches = rnd.randint(0, 8)
        deadline = time.monotonic() + 60
        struck = False
        while child.proc.poll() is None and time.monotonic() < deadline:
            pids = _run_backend_pids(tmpl.admin_url or "", dbname)
            runs = [r for r in _history_rows(s) if r["status"] == "running"] if pids else []
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
        history = {r["run_id"]: r for r in _history_rows(s)}
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
        inst = check_instant(s, tmpl.keys)
        result = run_cleanup(s, retention_days=RETENTION_DAYS, notify=False)
        assert result.status in ("success", "nothing_to_do"), result.error
        check_settled(s, tmpl.keys, tmpl.snapshot, fingerprint=tmpl.fingerprint)
    except BaseException as exc:
        stats.rows_lost += Stats.current_lost
        Stats.current_lost = 0
        raise AssertionError(f"{where}: {type(exc).__name__}: {exc}") from exc
    finally:
        tmpl.drop_copy(s)
    stats.add(f"trial {trial}, batch {batch}", time.monotonic() - t0)
    stats.killed += rc != 0
    stats.finished_first += rc == 0
    stats.rows_checked += len(tmpl.keys)
    stats.rows_deleted_before_fault += inst.committed + inst.in_backups
