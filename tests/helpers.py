"""Helpers for checking data-safety invariants: snapshots of the table and of backups."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import text

from conftest import ROOT
from core import list_backups, verify_backup
from core.backup.csvfile import iter_records
from core.config import Settings
from core.db import get_engine, quote


def table_snapshot(settings: Settings) -> dict[str, tuple]:
    """Every row of the log table as text, keyed by primary key (as text)."""
    engine = get_engine(settings)
    t = quote(engine, settings.table)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            rows = conn.execute(text(f"SELECT id::text, to_jsonb(t)::text FROM {t} t")).all()
            return {r[0]: _pg_row(r[1]) for r in rows}
        rows = conn.execute(text(f"SELECT * FROM {t}")).all()
        return {str(r[0]): tuple(r) for r in rows}


def _pg_row(js: str) -> tuple:
    import json

    d = json.loads(js)
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in d.items()))


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
    assert not lost, f"{len(lost)} rows lost, e.g. {sorted(lost)[:5]}"
    return {"in_table": len(in_table), "in_backups": len(seen), "lost": 0}


def launch_console(home: Path, env: dict[str, str], *flags: str) -> tuple[str, subprocess.Popen, Path]:
    """``streamlit run server.py`` (dashboard + HTTP trigger) on a free port, run in ``home``.

    Returns (base URL, process, log path) once ``/healthz`` answers; fails with the
    server's log if it exits or does not answer within 60 s. The caller stops it.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = home / "server.log"
    cmd = [str(Path(sys.executable).with_name("streamlit")), "run", str(ROOT / "server.py"),
           "--server.port", str(port), "--server.headless", "true", "--server.address", "127.0.0.1",
           "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
           "--secrets.files", str(home / "secrets.toml"), *flags]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"the server exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}"
        try:
            if requests.get(base + "/healthz", timeout=2).status_code == 200:
                return base, proc, log_path
        except (requests.ConnectionError, requests.Timeout):  # not listening or still starting
            pass
        assert time.monotonic() < deadline, (
            f"the server did not answer /healthz in 60 s:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.1)
