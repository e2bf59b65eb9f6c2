"""Test databases: PostgreSQL databases made and dropped per test, SQLite files, settings for
them, snapshots of the log table, and the fault suite's template tables.

PostgreSQL is found at ``TEST_PG_ADMIN_URL`` (default 127.0.0.1:5432, user postgres, set
by scripts/test.sh when it starts a throwaway cluster).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from core import preview
from core.config import Settings, load_settings
from core.db import dispose_engines, get_engine, quote
from core.demo import demo_data

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"

TABLE = "conversation_log"  # the demo log table
RETENTION_DAYS = 30
TEMPLATE_ROWS = int(os.environ.get("LRC_FAULT_ROWS", "20000"))


# ---------------------------------------------------------------------------
# PostgreSQL administration


def pg_unreachable_reason(admin_url: str = PG_ADMIN_URL) -> str | None:
    """Why no PostgreSQL server answers at ``admin_url``, or None when one does."""
    try:
        engine = create_engine(admin_url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure means: no usable server
        return f"PostgreSQL not reachable at {make_url(admin_url).render_as_string(hide_password=True)}: " + (
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        )


def pg_admin(admin_url: str, *statements: str) -> list[Any]:
    """Run ``statements`` in autocommit on the admin database; each one's rows (or None)."""
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
    """The URL of database ``name`` on the server of ``admin_url``."""
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def create_pg_database(admin_url: str, *, prefix: str = "lrc_test_", template: str | None = None) -> str:
    """A fresh database (empty, or a copy of database ``template``); returns its URL."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    pg_admin(admin_url, f'CREATE DATABASE "{name}"{copy}')
    return pg_url_for(admin_url, name)


def drop_pg_database(admin_url: str, url: str) -> None:
    """Drop the database of ``url``, closing its connections."""
    pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


# ---------------------------------------------------------------------------
# Settings and what the tables hold


def make_settings(url: str, backup_dir: Path, **extra: Any) -> Settings:
    """Settings for a test database: no .env, no environment."""
    return load_settings({"database_url": url, "backup_dir": str(backup_dir), **extra}, environ={}, env_file=None)


def kind_of(settings: Settings) -> str:
    """"sqlite" or "postgresql": the database of ``settings``."""
    return "sqlite" if settings.database_url.startswith("sqlite") else "postgresql"


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
    d = json.loads(js)
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in d.items()))


def table_fingerprint(settings: Settings) -> str:
    """A digest of every row of the table, in key order (PostgreSQL: computed by the server)."""
    engine = get_engine(settings)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            return str(conn.execute(text(
                f"SELECT md5(string_agg(to_jsonb(t)::text, E'\\n' ORDER BY id)) FROM {TABLE} t")).scalar())
    snap = table_snapshot(settings)
    return hashlib.sha256(repr(sorted(snap.items(), key=lambda kv: int(kv[0]))).encode()).hexdigest()


HISTORY_COLUMNS = ("run_id, status, partial_file, backup_file, manifest_file, committed_bytes, rows_deleted, "
                   "batches, error, notification, \"trigger\"")


def history_rows(settings: Settings) -> list[dict[str, Any]]:
    """The run-history table as plain rows ([] before it exists)."""
    engine = get_engine(settings)
    if not inspect(engine).has_table("retention_runs"):
        return []
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(f"SELECT {HISTORY_COLUMNS} FROM retention_runs")).mappings()]


# ---------------------------------------------------------------------------
# Templates: a realistic table built once, copied per trial


@dataclass
class Template:
    """A demo table built once per database; :meth:`copy` gives each trial its own copy in a
    fraction of a second (a SQLite file copy, or ``CREATE DATABASE ... TEMPLATE``)."""

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
            url = create_pg_database(admin_url, prefix="lrc_fault_tmpl_")
        s = make_settings(url, workdir / "template-backups")
        demo_data(s, rows=rows, days=90, seed=seed)
        snap = table_snapshot(s)
        old = preview(s, retention_days=RETENTION_DAYS).rows_to_delete
        fp = table_fingerprint(s)
        dispose_engines()  # a template database must have no connection when it is copied
        return cls(kind, url, admin_url, snap, frozenset(snap), old, fp)

    def copy(self, workdir: Path, **extra: Any) -> Settings:
        """A fresh copy of the template table in its own database, backups in ``workdir``."""
        workdir.mkdir(parents=True, exist_ok=True)
        if self.kind == "sqlite":
            dst = workdir / "trial.db"
            shutil.copyfile(make_url(self.url).database, dst)
            url = f"sqlite:///{dst}"
        else:
            assert self.admin_url
            url = create_pg_database(self.admin_url, prefix="lrc_fault_", template=make_url(self.url).database)
            self.made.append(make_url(url).database)
        return make_settings(url, workdir / "backups", **extra)

    def drop_copy(self, settings: Settings) -> None:
        dispose_engines()
        if self.kind == "postgresql" and self.admin_url:
            drop_pg_database(self.admin_url, settings.database_url)
            name = make_url(settings.database_url).database
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
