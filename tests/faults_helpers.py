"""Machinery of the fault suite (tests/test_faults*.py, ``pytest -m faults``).

- :class:`Template`: a realistic log table built once per database per session
  (SQLite file, or a PostgreSQL database used as ``CREATE DATABASE ... TEMPLATE``)
  and copied for every trial in a fraction of a second.
- :func:`start_cli`: ``python -m core ...`` as a subprocess that can be killed.
- :func:`check_instant`: the invariant (docs/design.md) at any instant, even with a run dead in
  the middle: every original row is in the table, in a backup that verifies, or in
  the committed prefix of an unfinished run's file (what recovery completes); never
  in two of them.
- :func:`check_settled`: after recovery: nothing running, no partial file, every
  backup verifies, no loss (``helpers.check_no_loss``), and restoring every backup
  gives back exactly the original table.
- :class:`Stats` / :func:`write_summary`: the numbers the suite reports.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from conftest import ROOT
from core import cleanup_running, list_backups, restore_backup, verify_backup
from core.backup.manifest import DATA_SUFFIX, PARTIAL_SUFFIX, manifest_path_for
from core.config import Settings, load_settings
from core.db import dispose_engines, get_engine
from core.demo import demo_data
from helpers import backup_keys, check_no_loss, table_snapshot

TABLE = "conversation_log"
RETENTION_DAYS = 30
SEED = int(os.environ.get("LRC_FAULT_SEED", "20260131"))
KILL_TRIALS = int(os.environ.get("LRC_KILL_TRIALS", "25"))
TEMPLATE_ROWS = int(os.environ.get("LRC_FAULT_ROWS", "20000"))
TESTS = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------
# Settings, environment and the CLI


def make_settings(url: str, backup_dir: Path, **extra: Any) -> Settings:
    """Settings for a test database: no .env, no environment."""
    return load_settings({"database_url": url, "backup_dir": str(backup_dir), **extra}, environ={}, env_file=None)


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """This environment minus every console setting, plus the database and backup folder of ``settings``."""
    drop = ("SLACK_", "DATABASE_", "LOG_", "BACKUP_", "CLEANUP_", "DASHBOARD_", "STREAMLIT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(DATABASE_URL=settings.database_url, BACKUP_DIR=settings.backup_dir, LOG_TABLE=settings.table,
               PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]), **extra)
    return env


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "core", *args, "--env-file", os.devnull]


def run_cli(settings: Settings, *args: str, timeout: float = 120, preexec_fn: Any = None,
            **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_cmd(*args), env=cli_env(settings, **env), cwd=Path(settings.backup_dir).parent,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)


@dataclass
class Child:
    """A CLI subprocess writing its output to files (no pipe can fill up and stall it)."""

    proc: subprocess.Popen
    started: float
    out: Path
    err: Path

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> bool:
        """SIGKILL now; True if the process was still running."""
        if self.proc.poll() is not None:
            return False
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        return True

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


def start_cli(settings: Settings, *args: str, preexec_fn: Any = None, **env: str) -> Child:
    home = Path(settings.backup_dir).parent
    tag = uuid.uuid4().hex[:6]
    out, err = home / f"cli-{tag}.out", home / f"cli-{tag}.err"
    with out.open("wb") as o, err.open("wb") as e:
        t0 = time.monotonic()
        proc = subprocess.Popen(cli_cmd(*args), env=cli_env(settings, **env), cwd=home, stdout=o, stderr=e,
                                preexec_fn=preexec_fn)
    return Child(proc, t0, out, err)


def one_line_error(stderr: str) -> str:
    """The CLI's error output must be exactly one readable line; returns it."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    return lines[0]


# ---------------------------------------------------------------------------
# PostgreSQL administration


def pg_admin(admin_url: str, *statements: str) -> list[Any]:
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    out = []
    try:
        with engine.connect() as conn:
            for sql in statements:
                res = conn.execute(text(sql))
                out.append(res.all() if res.returns_rows else None)
    finally:
        engine.dispose()
    return out


def pg_url_for(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


# ---------------------------------------------------------------------------
# Templates: a realistic table built once, copied per trial


@dataclass
class Template:
    kind: str  # "sqlite" | "postgresql"
    url: str
    admin_url: str | None
    snapshot: dict[str, tuple]
    keys: frozenset[str]
    old_rows: int  # rows older than the retention cutoff when it was built
    fingerprint: str
    made: list[str] = field(default_factory=list)  # PostgreSQL databases created from it

    @classmethod
    def build(cls, kind: str, workdir: Path, admin_url: str | None, rows: int = TEMPLATE_ROWS,
              seed: int = 11) -> Template:
        workdir.mkdir(parents=True, exist_ok=True)
        if kind == "sqlite":
            url = f"sqlite:///{workdir / 'template.db'}"
        else:
            assert admin_url
            name = f"lrc_fault_tmpl_{uuid.uuid4().hex[:10]}"
            pg_admin(admin_url, f'CREATE DATABASE "{name}"')
            url = pg_url_for(admin_url, name)
        s = make_settings(url, workdir / "template-backups")
        demo_data(s, rows=rows, days=90, seed=seed)
        snap = table_snapshot(s)
        from core import preview

        old = preview(s, retention_days=RETENTION_DAYS).rows_to_delete
        fp = table_fingerprint(s)
        dispose_engines()  # a template database must have no connection when it is copied
        return cls(kind, url, admin_url, snap, frozenset(snap), old, fp)

    def copy(self, workdir: Path, **extra: Any) -> Settings:
        """A fresh copy of the template table in its own database, backups in ``workdir``."""
        workdir.mkdir(parents=True, exist_ok=True)
        if self.kind == "sqlite":
            src = make_url(self.url).database
            dst = workdir / "trial.db"
            shutil.copyfile(src, dst)
            url = f"sqlite:///{dst}"
        else:
            assert self.admin_url
            tmpl = make_url(self.url).database
            name = f"lrc_fault_{uuid.uuid4().hex[:12]}"
            pg_admin(self.admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{tmpl}"')
            self.made.append(name)
            url = pg_url_for(self.admin_url, name)
        return make_settings(url, workdir / "backups", **extra)

    def drop_copy(self, settings: Settings) -> None:
        dispose_engines()
        if self.kind == "postgresql" and self.admin_url:
            name = make_url(settings.database_url).database
            pg_admin(self.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if name in self.made:
                self.made.remove(name)

    def destroy(self) -> None:
        dispose_engines()
        if self.kind == "postgresql" and self.admin_url:
            names = [*self.made, make_url(self.url).database]
            pg_admin(self.admin_url, *[f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in names])


def template_for(request: pytest.FixtureRequest, cache: dict[str, Template], kind: str,
                 factory: Any) -> Template:
    """The template of ``kind`` from ``cache``, built on first use (PostgreSQL skips without a server)."""
    if kind not in cache:
        admin = request.getfixturevalue("pg_admin_url") if kind == "postgresql" else None
        cache[kind] = factory(kind, admin)
    return cache[kind]


def wait_lock_free(settings: Settings, timeout: float = 30) -> None:
    """Wait until no process holds the table's cleanup lock (a killed client's PostgreSQL
    backend ends when it notices its socket closed)."""
    deadline = time.monotonic() + timeout
    while cleanup_running(settings):
        assert time.monotonic() < deadline, "the cleanup lock was still held after the process died"
        time.sleep(0.05)


# ---------------------------------------------------------------------------
# Invariants


@dataclass
class Instant:
    """What :func:`check_instant` saw."""

    in_table: int
    in_backups: int  # rows in finished backups (manifest present, verified)
    committed: int  # rows in the committed prefixes of unfinished runs' files
    runs: list[dict[str, Any]]  # history rows
    uncommitted_tail: bool  # an unfinished run's file is longer than its committed length


def _history_rows(settings: Settings) -> list[dict[str, Any]]:
    engine = get_engine(settings)
    if not inspect(engine).has_table("retention_runs"):
        return []
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(
            "SELECT run_id, status, partial_file, backup_file, manifest_file, committed_bytes, rows_deleted, "
            "batches, error, notification, \"trigger\" FROM retention_runs")).mappings()]


def _consistent_read(settings: Settings) -> tuple[set[str], list[dict[str, Any]]]:
    """Keys in the table and the history rows, from one snapshot."""
    engine = get_engine(settings)
    has_history = inspect(engine).has_table("retention_runs")
    opts = {"isolation_level": "REPEATABLE READ"} if engine.dialect.name == "postgresql" else {}
    with engine.connect().execution_options(**opts) as conn:
        keys = {str(k) for (k,) in conn.execute(text(f"SELECT id FROM {TABLE}"))}
        runs = []
        if has_history:
            runs = [dict(r) for r in conn.execute(text(
                "SELECT run_id, status, partial_file, backup_file, manifest_file, committed_bytes, "
                "rows_deleted, batches, error FROM retention_runs")).mappings()]
        conn.rollback()
    return keys, runs


def table_fingerprint(settings: Settings) -> str:
    """A digest of every row of the table, in key order (PostgreSQL: computed by the server)."""
    engine = get_engine(settings)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            return str(conn.execute(text(
                f"SELECT md5(string_agg(to_jsonb(t)::text, E'\\n' ORDER BY id)) FROM {TABLE} t")).scalar())
    import hashlib

    snap = table_snapshot(settings)
    return hashlib.sha256(repr(sorted(snap.items(), key=lambda kv: int(kv[0]))).encode()).hexdigest()


def fast_keys(path: str | os.PathLike[str]) -> list[str]:
    """Keys (first column) of a backup, parsed by the csv module (C speed); AssertionError if unreadable."""
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            next(reader)
            return [row[0] for row in reader]
    except (OSError, EOFError, UnicodeDecodeError, StopIteration, csv.Error) as exc:
        raise AssertionError(f"{path} is not a readable backup: {type(exc).__name__}: {exc}") from None


def keys_in_prefix(path: Path, length: int) -> list[str]:
    """Keys of the rows in the first ``length`` bytes of a backup file (must be whole gzip members)."""
    with tempfile.NamedTemporaryFile(suffix=DATA_SUFFIX) as tmp:
        with open(path, "rb") as f:
            remaining = length
            while remaining:
                chunk = f.read(min(remaining, 1 << 20))
                assert chunk, f"{path} is shorter than its committed length {length}"
                tmp.write(chunk)
                remaining -= len(chunk)
        tmp.flush()
        try:
            return fast_keys(tmp.name)
        except AssertionError as exc:
            raise AssertionError(f"the committed {length} bytes of {path} are not a whole backup: {exc}") from None


def check_instant(settings: Settings, original: frozenset[str] | set[str]) -> Instant:
    """The invariant (docs/design.md) at this instant, with runs possibly dead mid-way.

    Every original key is in the table, in a finished backup that verifies, or in
    the committed prefix (``committed_bytes``) of an unfinished run's file, which
    holds exactly ``rows_deleted`` rows; no key is in two places. A ``.csv.gz``
    without a manifest is allowed only as an unfinished run's file. Unfinished: still
    'running' (died), or ended with ``partial_file`` set (its backup could not be
    finished; the next run's recovery finishes it).
    """
    in_table, runs = _consistent_read(settings)
    where: dict[str, str] = {}

    def place(keys: list[str], label: str) -> None:
        for k in keys:
            assert k not in where, f"row {k} is both in {where[k]} and in {label}"
            where[k] = label

    claimed: set[Path] = set()
    committed = 0
    tail = False
    for run in runs:
        if run["status"] != "running" and not run["partial_file"]:
            continue  # finished (a failed run whose backup could not be finished keeps its partial_file)
        final = Path(run["backup_file"]) if run["backup_file"] else None
        partial = Path(run["partial_file"]) if run["partial_file"] else None
        data = final if final and final.exists() else partial if partial and partial.exists() else None
        claimed |= {p for p in (final, partial) if p}
        rows = int(run["rows_deleted"] or 0)
        if rows == 0:
            continue
        assert data is not None, f"run {run['run_id']} deleted {rows} rows and its file is gone"
        size = data.stat().st_size
        length = int(run["committed_bytes"])
        assert size >= length, f"{data} has {size} bytes, the journal committed {length}"
        tail = tail or size > length
        keys = keys_in_prefix(data, length)
        assert len(keys) == rows, f"{data}: {len(keys)} rows in the committed bytes, the journal says {rows}"
        place(keys, f"the unfinished run {run['run_id']}")
        committed += rows
    backup_dir = Path(settings.backup_dir)
    in_backups = 0
    if backup_dir.is_dir():
        for f in sorted(backup_dir.iterdir()):
            if f in claimed:
                continue
            assert not f.name.endswith(PARTIAL_SUFFIX), f"{f.name}: a partial file no unfinished run owns"
            if not f.name.endswith(DATA_SUFFIX):
                continue
            assert manifest_path_for(f).exists(), f"{f.name} looks complete but has no manifest"
            v = verify_backup(settings, f)
            assert v.ok, f"{f.name} does not verify: {v.problem}"
            keys = fast_keys(f)
            place(keys, f.name)
            in_backups += len(keys)
    both = in_table & set(where)
    assert not both, f"{len(both)} rows are in the table and archived, e.g. {sorted(both)[:5]}"
    lost = set(original) - in_table - set(where)
    Stats.current_lost = len(lost)
    assert not lost, f"{len(lost)} rows are nowhere, e.g. {sorted(lost, key=int)[:5]}"
    return Instant(len(in_table), in_backups, committed, runs, tail)


@dataclass
class Settled:
    in_table: int
    in_backups: int
    backups: int
    lost: int


def check_settled(settings: Settings, original: frozenset[str] | set[str],
                  snapshot: dict[str, tuple] | None, *, restore: bool = True,
                  fingerprint: str | None = None, fast: bool = False) -> Settled:
    """After every run finished (and recovered): the strong checks, then the restore round trip.

    No run is 'running', no partial file is left, every ``.csv.gz`` has a manifest; then
    ``helpers.check_no_loss`` (every backup verifies; every original row is in the table or
    in exactly one backup, never both). With ``fast`` the same invariant is checked by
    :func:`check_instant`, which reads keys only and parses backups with the csv module
    (the kill trials use it on most trials to stay within the CI budget). ``snapshot`` is
    the original table; with ``restore`` every backup is restored and the table must equal
    it exactly (compared by ``fingerprint`` first when given, row by row otherwise or when
    the fingerprints differ, to say what differs).
    """
    runs = _history_rows(settings)
    running = [r["run_id"] for r in runs if r["status"] == "running"]
    assert not running, f"history still says running: {running}"
    backup_dir = Path(settings.backup_dir)
    files = sorted(backup_dir.iterdir()) if backup_dir.is_dir() else []
    partials = [f.name for f in files if f.name.endswith(PARTIAL_SUFFIX)]
    assert not partials, f"partial files left: {partials}"
    for f in files:
        if f.name.endswith(DATA_SUFFIX):
            assert manifest_path_for(f).exists(), f"{f.name} has no manifest"
    try:
        if fast:
            inst = check_instant(settings, original)
            counts = {"in_table": inst.in_table, "in_backups": inst.in_backups}
        else:
            counts = check_no_loss(settings, set(original))  # every backup verifies; no row twice; none lost
    except AssertionError:
        in_table = set(table_snapshot(settings))
        archived = {k for b in list_backups(settings) for k in backup_keys(b.file)}
        Stats.current_lost = len(set(original) - in_table - archived)
        raise
    backups = list_backups(settings)
    assert sum(b.rows for b in backups) == counts["in_backups"]
    if restore:
        for b in backups:
            r = restore_backup(settings, b.file)
            assert (r.rows_restored, r.rows_skipped) == (b.rows, 0), (b.file, r)
        assert snapshot is not None
        if fingerprint is not None and table_fingerprint(settings) == fingerprint:
            return Settled(counts["in_table"], counts["in_backups"], len(backups), 0)
        after = table_snapshot(settings)
        missing = set(snapshot) - set(after)
        extra = set(after) - set(snapshot)
        changed = [k for k in set(snapshot) & set(after) if after[k] != snapshot[k]]
        assert not (missing or extra or changed), (
            f"after restoring every backup: {len(missing)} rows missing, {len(extra)} extra, "
            f"{len(changed)} changed, e.g. {sorted(missing | extra | set(changed))[:5]}")
    return Settled(counts["in_table"], counts["in_backups"], len(backups), 0)


# ---------------------------------------------------------------------------
# Numbers for the report


@dataclass
class Stats:
    """Counts per scenario and database, printed at the end of the module (and optionally saved)."""

    name: str
    trials: int = 0
    killed: int = 0
    finished_first: int = 0
    rows_checked: int = 0
    rows_lost: int = 0
    rows_deleted_before_fault: int = 0
    slowest_s: float = 0.0
    slowest_id: str = ""
    total_s: float = 0.0
    phases: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    phase_label: str = "outcomes"

    current_lost = 0  # set by check_settled when it finds a loss (class-level scratch)

    def add(self, trial_id: str, seconds: float) -> None:
        self.trials += 1
        self.total_s += seconds
        if seconds > self.slowest_s:
            self.slowest_s, self.slowest_id = seconds, trial_id

    def lines(self) -> list[str]:
        head = f"{self.name}: {self.trials} trials"
        if self.killed or self.finished_first:
            head += f" ({self.killed} struck mid-run, {self.finished_first} finished before the fault)"
        head += f", {self.rows_checked:,} rows checked, {self.rows_lost} rows lost"
        if self.rows_deleted_before_fault:
            head += f", {self.rows_deleted_before_fault:,} rows deleted by batches committed before the fault"
        head += f"; slowest trial {self.slowest_s:.2f} s ({self.slowest_id}), total {self.total_s:.1f} s"
        out = [head]
        if self.phases:
            out.append(f"    {self.phase_label}: " + ", ".join(f"{k} {v}" for k, v in self.phases.most_common()))
        out += [f"    {n}" for n in self.notes]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "trials": self.trials, "killed": self.killed, "finished_first": self.finished_first,
                "rows_checked": self.rows_checked, "rows_lost": self.rows_lost,
                "rows_deleted_before_fault": self.rows_deleted_before_fault, "slowest_s": round(self.slowest_s, 3),
                "slowest_trial": self.slowest_id, "total_s": round(self.total_s, 1), "phases": dict(self.phases),
                "notes": self.notes}


def write_summary(config: pytest.Config, title: str, stats: list[Stats]) -> None:
    """Print the numbers in the terminal summary area (also without -s); save them to
    $LRC_FAULT_STATS (a JSON lines file) when set."""
    stats = [s for s in stats if s.trials]
    if not stats:
        return
    lines = [f"=== {title} (seed {SEED}, LRC_KILL_TRIALS={KILL_TRIALS}) ==="]
    for s in stats:
        lines += s.lines()
    tr = config.pluginmanager.getplugin("terminalreporter")
    capman = config.pluginmanager.getplugin("capturemanager")
    if tr is not None:
        if capman is not None:
            with capman.global_and_fixture_disabled():
                tr.write_line("")
                for line in lines:
                    tr.write_line(line)
        else:
            for line in lines:
                tr.write_line(line)
    target = os.environ.get("LRC_FAULT_STATS")
    if target:
        with open(target, "a", encoding="utf-8") as f:
            for s in stats:
                f.write(json.dumps({"title": title, "seed": SEED, **s.as_dict()}) + "\n")


# ---------------------------------------------------------------------------
# Concurrent writer (run in its own process by test_faults.py)


def writer_main(url: str, log_path: str, stop_path: str, seed: int, id_base: int, max_id: int) -> None:
    """Insert and update rows until ``stop_path`` exists; log every committed change as a JSON line.

    Operations: insert an old row (older than the 30-day cutoff) or a new one; update
    the message of a random row; make a new row old, or an old row new. Every update
    writes a unique message, so a version is recognisable wherever it ends up.
    """
    import random
    from datetime import UTC, datetime, timedelta

    sqlite = url.startswith("sqlite")
    engine = create_engine(url, connect_args={"timeout": 30} if sqlite else {})
    rnd = random.Random(seed)

    def ts(days_ago: float) -> Any:
        value = datetime.now(UTC) - timedelta(days=days_ago)
        return value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else value

    with open(log_path, "a", encoding="utf-8") as log:
        i = 0
        while not os.path.exists(stop_path):
            i += 1
            op = rnd.random()
            msg = f"writer version {seed}-{i} \"quoted\", comma\nnewline"
            with engine.begin() as conn:
                if op < 0.3 or op >= 0.95:
                    key = id_base + i
                    old = op < 0.3
                    conn.execute(text(f"INSERT INTO {TABLE} (id, session_id, role, message, created_at) "
                                      "VALUES (:i, 'writer', 'user', :m, :t)"),
                                 {"i": key, "m": msg, "t": ts(rnd.uniform(31, 89) if old else 0)})
                    entry = {"op": "insert", "id": key, "msg": msg, "old": old}
                else:
                    key = rnd.randint(1, max_id)
                    if op < 0.7:
                        sql, kind, old = f"UPDATE {TABLE} SET message = :m WHERE id = :i", "update", None
                        params = {"m": msg, "i": key}
                    else:
                        old = op < 0.85
                        sql = f"UPDATE {TABLE} SET message = :m, created_at = :t WHERE id = :i"
                        kind = "make old" if old else "make new"
                        params = {"m": msg, "i": key, "t": ts(rnd.uniform(31, 89) if old else 0)}
                    if conn.execute(text(sql), params).rowcount != 1:
                        continue  # the row is gone (archived): nothing changed
                    entry = {"op": kind, "id": key, "msg": msg, "old": old}
            log.write(json.dumps(entry) + "\n")
            log.flush()
            time.sleep(rnd.random() * 0.004)
    engine.dispose()


def start_writer(settings: Settings, home: Path, seed: int, id_base: int, max_id: int) -> tuple[subprocess.Popen,
                                                                                               Path, Path]:
    log, stop = home / f"writer-{seed}.jsonl", home / f"writer-{seed}.stop"
    code = (f"import faults_helpers as f; f.writer_main({settings.database_url!r}, {str(log)!r}, {str(stop)!r}, "
            f"{seed}, {id_base}, {max_id})")
    env = cli_env(settings)
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=home)
    return proc, log, stop


# ---------------------------------------------------------------------------
# Entry points: the real server, and the lock seen without taking it


def lock_holder_seen(settings: Settings) -> bool:
    """True when some process holds the table's cleanup lock, observed without trying to take it
    (a probe that takes the lock could make a starting cleanup think another one runs)."""
    from core.db import lock_key, sqlite_lock_path

    if settings.database_url.startswith("sqlite"):
        path = sqlite_lock_path(settings)
        if not path.exists():
            return False
        st = path.stat()
        dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        with open("/proc/locks", encoding="ascii") as f:
            return any(dev in line.split() for line in f if "FLOCK" in line)
    key = lock_key(settings) & 0xFFFFFFFFFFFFFFFF  # a bigint advisory key is shown as two 32-bit halves
    engine = get_engine(settings)
    with engine.connect() as conn:
        n = conn.execute(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid::bigint = :hi AND objid::bigint = :lo"), {"hi": key >> 32, "lo": key & 0xFFFFFFFF}).scalar()
    return bool(n)


class writes_blocked:
    """Context manager: a started cleanup waits at its first write (SQLite: BEGIN IMMEDIATE
    held here) or its first DELETE (PostgreSQL: SHARE lock on the table)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn: Any = None

    def __enter__(self) -> writes_blocked:
        url = make_url(self.settings.database_url)
        if url.get_backend_name() == "sqlite":
            import sqlite3

            self.conn = sqlite3.connect(url.database, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            import psycopg2

            self.conn = psycopg2.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
            with self.conn.cursor() as cur:
                cur.execute(f'LOCK TABLE "{TABLE}" IN SHARE MODE')
        return self

    def release(self) -> None:
        if self.conn is not None:
            self.conn.rollback()
            self.conn.close()
            self.conn = None

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class Server:
    base: str
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(settings: Settings, home: Path, **env: str) -> Server:
    """``streamlit run server.py`` (dashboard + HTTP trigger) on a free port, as the README starts it."""
    from helpers import launch_console

    home.mkdir(parents=True, exist_ok=True)
    base, proc, log_path = launch_console(home, cli_env(settings, **env))
    return Server(base, proc, log_path)
