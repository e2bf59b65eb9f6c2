"""The no-row-lost checks: every original row is in the table or in exactly one backup that
verifies, never both, and nothing is left looking complete that is not.

- :func:`check_no_loss`: after the runs, reading whole backups through the core's reader.
- :func:`check_instant`: at any instant, even with a run dead in the middle: every original
  row is in the table, in a backup that verifies, or in the committed prefix of an unfinished
  run's file (what recovery completes); never in two of them.
- :func:`check_settled`: after recovery: nothing running, no partial file, every backup
  verifies, no loss, and restoring every backup gives back exactly the original table.

A check that finds rows lost raises :class:`RowsLost`, which carries their number.
"""

from __future__ import annotations

import csv
import gzip
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text

from core import list_backups, restore_backup, verify_backup
from core.backup.csvfile import iter_records
from core.backup.manifest import DATA_SUFFIX, PARTIAL_SUFFIX, manifest_path_for
from core.config import Settings
from core.db import get_engine
from tests.support.databases import TABLE, history_rows, table_fingerprint, table_snapshot


class RowsLost(AssertionError):
    """A check found original rows neither in the table nor in any backup."""

    def __init__(self, lost: int, message: str) -> None:
        super().__init__(message)
        self.lost = lost


def rows_lost_in(exc: BaseException) -> int:
    """How many rows the failed check ``exc`` found lost (0 when it failed for another reason)."""
    return exc.lost if isinstance(exc, RowsLost) else 0


def backup_keys(path: str | Path) -> list[str]:
    """Primary keys (first column) of the rows in a backup file."""
    it = iter_records(path)
    next(it)
    return [rec[0] for rec in it]


def check_no_loss(settings: Settings, original_keys: set[str]) -> dict[str, Any]:
    """Every original key is in the table or in exactly one verified backup, never both.

    Returns counts; raises AssertionError with details on any violation.
    """
    in_table = set(table_snapshot(settings))
    seen: dict[str, str] = {}
    for b in list_backups(settings):
        v = verify_backup(settings, b.file)
        assert v.ok, f"backup {b.file} does not verify: {v.problem}"
        for key in backup_keys(b.file):
            assert key not in seen, f"row {key} is in two backups: {seen[key]} and {b.file}"
            seen[key] = b.file
    both = in_table & set(seen)
    assert not both, f"{len(both)} rows are both in the table and in a backup, e.g. {sorted(both)[:5]}"
    lost = original_keys - in_table - set(seen)
    if lost:
        raise RowsLost(len(lost), f"{len(lost)} rows lost, e.g. {sorted(lost)[:5]}")
    return {"in_table": len(in_table), "in_backups": len(seen), "lost": 0}


# ---------------------------------------------------------------------------
# At any instant


@dataclass
class Instant:
    """What :func:`check_instant` saw."""

    in_table: int
    in_backups: int  # rows in finished backups (manifest present, verified)
    committed: int  # rows in the committed prefixes of unfinished runs' files
    runs: list[dict[str, Any]]  # history rows
    uncommitted_tail: bool  # an unfinished run's file is longer than its committed length


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


class _Places:
    """Where each key was found; a key found twice fails."""

    def __init__(self) -> None:
        self.where: dict[str, str] = {}

    def put(self, keys: list[str], label: str) -> None:
        for k in keys:
            assert k not in self.where, f"row {k} is both in {self.where[k]} and in {label}"
            self.where[k] = label


def _unfinished_runs(runs: list[dict[str, Any]], places: _Places) -> tuple[set[Path], int, bool]:
    """Place the committed rows of every unfinished run; (files they own, rows, uncommitted tail seen)."""
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
        places.put(keys, f"the unfinished run {run['run_id']}")
        committed += rows
    return claimed, committed, tail


def _finished_backups(settings: Settings, claimed: set[Path], places: _Places) -> int:
    """Place the rows of every finished backup (each must have a manifest and verify); their number."""
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
            places.put(keys, f.name)
            in_backups += len(keys)
    return in_backups


def check_instant(settings: Settings, original: frozenset[str] | set[str]) -> Instant:
    """The invariant at this instant, with runs possibly dead mid-way.

    Every original key is in the table, in a finished backup that verifies, or in
    the committed prefix (``committed_bytes``) of an unfinished run's file, which
    holds exactly ``rows_deleted`` rows; no key is in two places. A ``.csv.gz``
    without a manifest is allowed only as an unfinished run's file. Unfinished: still
    'running' (died), or ended with ``partial_file`` set (its backup could not be
    finished; the next run's recovery finishes it).
    """
    in_table, runs = _consistent_read(settings)
    places = _Places()
    claimed, committed, tail = _unfinished_runs(runs, places)
    in_backups = _finished_backups(settings, claimed, places)
    both = in_table & set(places.where)
    assert not both, f"{len(both)} rows are in the table and archived, e.g. {sorted(both)[:5]}"
    lost = set(original) - in_table - set(places.where)
    if lost:
        raise RowsLost(len(lost), f"{len(lost)} rows are nowhere, e.g. {sorted(lost, key=int)[:5]}")
    return Instant(len(in_table), in_backups, committed, runs, tail)


# ---------------------------------------------------------------------------
# After the runs


@dataclass
class Settled:
    """What :func:`check_settled` counted."""

    in_table: int
    in_backups: int
    backups: int
    lost: int


def _nothing_unfinished(settings: Settings) -> None:
    """No run 'running', no partial file left, every ``.csv.gz`` with its manifest."""
    runs = history_rows(settings)
    running = [r["run_id"] for r in runs if r["status"] == "running"]
    assert not running, f"history still says running: {running}"
    backup_dir = Path(settings.backup_dir)
    files = sorted(backup_dir.iterdir()) if backup_dir.is_dir() else []
    partials = [f.name for f in files if f.name.endswith(PARTIAL_SUFFIX)]
    assert not partials, f"partial files left: {partials}"
    for f in files:
        if f.name.endswith(DATA_SUFFIX):
            assert manifest_path_for(f).exists(), f"{f.name} has no manifest"


def _restores_exactly(settings: Settings, backups: list[Any], snapshot: dict[str, tuple],
                      fingerprint: str | None) -> None:
    """Restore every backup; the table must then equal ``snapshot``."""
    for b in backups:
        r = restore_backup(settings, b.file)
        assert (r.rows_restored, r.rows_skipped) == (b.rows, 0), (b.file, r)
    if fingerprint is not None and table_fingerprint(settings) == fingerprint:
        return
    after = table_snapshot(settings)
    missing = set(snapshot) - set(after)
    extra = set(after) - set(snapshot)
    changed = [k for k in set(snapshot) & set(after) if after[k] != snapshot[k]]
    assert not (missing or extra or changed), (
        f"after restoring every backup: {len(missing)} rows missing, {len(extra)} extra, "
        f"{len(changed)} changed, e.g. {sorted(missing | extra | set(changed))[:5]}")


def check_settled(settings: Settings, original: frozenset[str] | set[str],
                  snapshot: dict[str, tuple] | None, *, restore: bool = True,
                  fingerprint: str | None = None, fast: bool = False) -> Settled:
    """After every run finished (and recovered): the strong checks, then the restore round trip.

    No run is 'running', no partial file is left, every ``.csv.gz`` has a manifest; then
    :func:`check_no_loss` (every backup verifies; every original row is in the table or
    in exactly one backup, never both). With ``fast`` the same invariant is checked by
    :func:`check_instant`, which reads keys only and parses backups with the csv module
    (the kill trials use it on most trials to stay within the CI budget). ``snapshot`` is
    the original table; with ``restore`` every backup is restored and the table must equal
    it exactly (compared by ``fingerprint`` first when given, row by row otherwise or when
    the fingerprints differ, to say what differs).
    """
    _nothing_unfinished(settings)
    try:
        if fast:
            inst = check_instant(settings, original)
            counts = {"in_table": inst.in_table, "in_backups": inst.in_backups}
        else:
            counts = check_no_loss(settings, set(original))  # every backup verifies; no row twice; none lost
    except AssertionError as exc:
        if isinstance(exc, RowsLost):
            raise
        in_table = set(table_snapshot(settings))
        archived = {k for b in list_backups(settings) for k in backup_keys(b.file)}
        lost = len(set(original) - in_table - archived)
        if lost:
            raise RowsLost(lost, str(exc)) from exc
        raise
    backups = list_backups(settings)
    assert sum(b.rows for b in backups) == counts["in_backups"]
    if restore:
        assert snapshot is not None
        _restores_exactly(settings, backups, snapshot, fingerprint)
    return Settled(counts["in_table"], counts["in_backups"], len(backups), 0)
