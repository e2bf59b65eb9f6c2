"""The kill lab: template tables, the measured run time of an unkilled cleanup, trial planning,
and the frame every trial runs in (its own copy of the table, its numbers, its failure message).

Used by test_faults_kill.py (kill -9) and test_faults_connection.py (pg_terminate_backend)
through the session fixture ``lab`` of conftest.py.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from core.config import Settings
from tests.support import ROOT
from tests.support.databases import RETENTION_DAYS, Template, template_for
from tests.support.invariants import Instant, check_settled, rows_lost_in
from tests.support.processes import start_cli
from tests.support.report import SEED, Stats, StatsBook

BATCH_MIN, BATCH_MAX = 50, 500


def run_args(batch: int) -> list[str]:
    """The CLI arguments of a trial's cleanup."""
    return ["run", "--batch-size", str(batch), "--no-notify", "--retention-days", str(RETENTION_DAYS), "--json"]


def respelled(s: Settings, n: int, *, cli: bool) -> Settings:
    """Spelling ``n`` of the same table: killers and recoverers must meet one lock and one history.

    PostgreSQL: localhost or 127.0.0.1, the port given or omitted, ``public.`` or not.
    SQLite: absolute, relative (only for the CLI, which runs in the trial folder), through a
    symlink, or with ``/./`` in the path.
    """
    url = make_url(s.database_url)
    if url.get_backend_name() == "sqlite":
        real = Path(url.database)
        link = real.with_name("spelled-link.db")
        if not link.exists():
            link.symlink_to(real)
        forms = [str(real), str(link), f"{real.parent}/./{real.name}"] + ([real.name] if cli else [])
        return s.with_overrides(database_url=f"sqlite:///{forms[n % len(forms)]}")
    host, port, schema = ("127.0.0.1", "localhost")[n % 2], (url.port, None)[(n // 2) % 2], ("", "public.")[n % 3 == 1]
    return s.with_overrides(database_url=url.set(host=host, port=port).render_as_string(hide_password=False),
                            table=f"{schema}{s.table}")


def plan(kind: str, trial: int, trials: int) -> tuple[random.Random, int, float]:
    """(rng, batch size, u in [0, 1): where in the run to strike) for one trial.

    Moments are stratified over the trials: trial i draws u in [i/N, (i+1)/N), so every
    run of N trials covers the whole run evenly (test_faults_kill.moment_for maps u to seconds).
    The batch size is log-uniform in BATCH_MIN..BATCH_MAX.
    """
    rnd = random.Random(f"{kind}:{SEED + trial}")
    batch = round(math.exp(rnd.uniform(math.log(BATCH_MIN), math.log(BATCH_MAX))))
    u = (trial % trials + rnd.random()) / trials
    return rnd, batch, u


@dataclass
class Trial:
    """One trial's copy of the table and what the test records about it."""

    settings: Settings
    started: float
    label: str = ""
    struck: bool = False  # the fault hit a running cleanup (False: it had finished first)
    instant: Instant | None = None  # what check_instant saw right after the fault


class Lab:
    """Templates, measured run durations and statistics, shared by the trials of a session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.templates: dict[str, Template] = {}
        self.models: dict[str, tuple[float, float]] = {}
        self.ratios: dict[str, list[float]] = {}  # actual / modelled time of runs that were not killed
        self._startup: float | None = None
        self.stats = StatsBook(phase_label="where the fault hit")
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
        return self.stats.get(key, name)

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

    @contextmanager
    def trial(self, tmpl: Template, workdir: Path, stats: Stats, where: str) -> Iterator[Trial]:
        """A fresh copy of ``tmpl`` in ``workdir`` for one trial, dropped afterwards.

        The body sets the trial's ``label``, ``struck`` and ``instant``; they are counted in
        ``stats`` when it succeeds. A failure is re-raised as an AssertionError that starts
        with ``where`` (the trial, its seed, how to rerun it); rows it found lost are counted.
        """
        t0 = time.monotonic()
        t = Trial(settings=tmpl.copy(workdir, batch_size=5000), started=t0)
        try:
            yield t
        except BaseException as exc:
            stats.rows_lost += rows_lost_in(exc)
            raise AssertionError(f"{where}: {type(exc).__name__}: {exc}") from exc
        finally:
            tmpl.drop_copy(t.settings)
        assert t.instant is not None, "a trial must record what check_instant saw"
        stats.add(t.label, time.monotonic() - t.started)
        stats.killed += t.struck
        stats.finished_first += not t.struck
        stats.rows_checked += len(tmpl.keys)
        stats.rows_deleted_before_fault += t.instant.committed + t.instant.in_backups

    def close(self) -> None:
        for tmpl in self.templates.values():
            tmpl.destroy()
