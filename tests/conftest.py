"""Fixtures shared by every test: one database per test, on SQLite and PostgreSQL.

PostgreSQL is found at TEST_PG_ADMIN_URL (default 127.0.0.1:5432, user postgres,
set by scripts/test.sh when it starts a throwaway cluster). Without a server the
PostgreSQL half skips with the reason, except under CI=true where it fails.
The machinery behind these fixtures is in ``tests/support/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Settings, load_settings
from core.db import dispose_engines
from core.demo import demo_data
from tests.support import ROOT
from tests.support.databases import (
    IN_CI,
    PG_ADMIN_URL,
    create_pg_database,
    drop_pg_database,
    pg_unreachable_reason,
)
from tests.support.report import StatsBook, write_summary
from tests.support.trials import Lab


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    reason = pg_unreachable_reason(PG_ADMIN_URL)
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true requires PostgreSQL: {reason}")
        pytest.skip(reason)
    return PG_ADMIN_URL


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
def pg_settings(pg_url: str, tmp_path: Path) -> Settings:
    """``settings`` on PostgreSQL only, for the cases that exist on one database."""
    return load_settings({"database_url": pg_url, "backup_dir": str(tmp_path / "backups"), "batch_size": 100},
                         environ={}, env_file=None)


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


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy from the environment in the way of 127.0.0.1; no Slack channel cache from another test."""
    import core.notify  # here, not at the top: only the tests that talk to a fake Slack need it

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    core.notify.clear_channel_cache()


@pytest.fixture(scope="session")
def scenario_stats(request: pytest.FixtureRequest) -> Iterator[StatsBook]:
    """The numbers of the fault scenarios, printed at the end of the session."""
    book = StatsBook()
    yield book
    write_summary(request.config, "fault scenarios", book.all())


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The kill lab of the fault trials: templates built once per database, numbers printed at the end."""
    lab = Lab(tmp_path_factory.mktemp("fault-lab"))
    yield lab
    lab.close()
    write_summary(request.config, "fault trials", lab.stats.all())
