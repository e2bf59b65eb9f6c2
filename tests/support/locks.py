"""The table's cleanup lock seen from outside, and a cleanup's writes held back on purpose."""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

import psycopg2
from sqlalchemy import text
from sqlalchemy.engine import make_url

from core import cleanup_running
from core.config import Settings
from core.db import get_engine, lock_key, table_identity
from core.identity import sqlite_lock_path
from tests.support.databases import TABLE


def wait_lock_free(settings: Settings, timeout: float = 30) -> None:
    """Wait until no process holds the table's cleanup lock (a killed client's PostgreSQL
    backend ends when it notices its socket closed)."""
    deadline = time.monotonic() + timeout
    while cleanup_running(settings):
        assert time.monotonic() < deadline, "the cleanup lock was still held after the process died"
        time.sleep(0.05)


def lock_holder_seen(settings: Settings) -> bool:
    """True when some process holds the table's cleanup lock, observed without trying to take it
    (a probe that takes the lock could make a starting cleanup think another one runs)."""
    if settings.database_url.startswith("sqlite"):
        path = sqlite_lock_path(table_identity(settings))
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
            self.conn = sqlite3.connect(url.database, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
        else:
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
