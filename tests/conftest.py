"""Fixtures shared by every test: one database per test, on SQLite and PostgreSQL.

PostgreSQL is found at TEST_PG_ADMIN_URL (default 127.0.0.1:5432, user postgres,
set by scripts/test.sh when it starts a throwaway cluster). Without a server the
PostgreSQL half skips with the reason, except under CI=true where it fails.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.config import Settings, load_settings  # noqa: E402
from core.db import dispose_engines  # noqa: E402
from core.demo import demo_data  # noqa: E402

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _pg_reason() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure means: no usable server
        return f"PostgreSQL not reachable at {make_url(PG_ADMIN_URL).render_as_string(hide_password=True)}: " + (
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        )


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    reason = _pg_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true requires PostgreSQL: {reason}")
        pytest.skip(reason)
    return PG_ADMIN_URL


def create_pg_database(admin_url: str) -> str:
    """A fresh empty database; returns its URL."""
    name = f"lrc_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin_url: str):
    """URL of a PostgreSQL database created for this test and dropped after it."""
    url = create_pg_database(pg_admin_url)
    yield url
    dispose_engines()
    drop_pg_database(pg_admin_url, url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path):
    """Each test using this runs twice: on a SQLite file and on a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        dispose_engines()
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings for this test's database, backups in tmp_path; no .env, no environment."""
    return load_settings(
        {"database_url": db_url, "backup_dir": str(tmp_path / "backups"), "batch_size": 100},
        environ={},
        env_file=None,
    )


@pytest.fixture
def demo_settings(settings: Settings) -> Settings:
    """``settings`` with a demo log table of 600 rows over 90 days."""
    demo_data(settings, rows=600, days=90, seed=7)
    return settings


@pytest.fixture
def cli_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    """Environment for running ``python -m core`` in a subprocess against ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE_", "LOG_", "BACKUP_"))}
    env.update(
        DATABASE_URL=settings.database_url,
        BACKUP_DIR=settings.backup_dir,
        PYTHONPATH=str(ROOT),
    )
    return env
