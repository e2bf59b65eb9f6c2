"""core.config, the pure module: sources and their precedence, validation, masking, short secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.checks import GENERATE_SECRET
from core.config import (
    ENV_NAMES,
    SECRET_FIELDS,
    SHOWN_FOR_A_SECRET,
    SPECS,
    Settings,
    load_settings,
    mask_url,
    read_sources,
)
from core.errors import BadSetting

TOKEN = "t0ken-of-at-least-16-chars"
PASSWORD = "a long enough password"


def load(overrides=None, *, environ=None, env_file=None, secrets_files=()) -> Settings:
    return load_settings(overrides, environ=environ or {}, env_file=env_file, secrets_files=secrets_files)


# --- precedence: defaults < .env < environment < secrets file < flags -------------------------


@pytest.fixture
def sources(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text('LOG_RETENTION_DAYS=10\nLOG_TABLE="from_env_file"\nexport BACKUP_DIR=/env-file\n'
                        "SLACK_CHANNEL=env-file # a comment\n")
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('LOG_TABLE = "from_secrets"\nCLEANUP_BATCH_SIZE = 7\n[auth]\nDATABASE_URL = "ignored"\n')
    environ = {"LOG_TABLE": "from_environ", "BACKUP_DIR": "/environ", "CLEANUP_BATCH_SIZE": "5"}
    return env_file, environ, secrets


def test_defaults_when_no_source_sets_anything():
    s = load()
    assert s == Settings()
    assert (s.database_url, s.table, s.retention_days, s.batch_size) == (
        "sqlite:///./local.db", "conversation_log", 30, 50_000)


def test_env_file_overrides_defaults(sources):
    env_file, _, _ = sources
    s = load(env_file=env_file)
    assert (s.retention_days, s.table, s.backup_dir, s.slack_channel) == (10, "from_env_file", "/env-file", "env-file")


def test_environment_overrides_env_file(sources):
    env_file, environ, _ = sources
    s = load(env_file=env_file, environ=environ)
    assert (s.table, s.backup_dir, s.batch_size, s.retention_days) == ("from_environ", "/environ", 5, 10)


def test_secrets_file_overrides_environment_and_its_sections_are_ignored(sources):
    env_file, environ, secrets = sources
    s = load(env_file=env_file, environ=environ, secrets_files=[secrets])
    assert (s.table, s.batch_size, s.backup_dir) == ("from_secrets", 7, "/environ")
    assert s.database_url == "sqlite:///./local.db"  # DATABASE_URL under [auth] is not a setting


def test_later_secrets_file_overrides_earlier_and_missing_files_count_as_empty(tmp_path, sources):
    _, _, secrets = sources
    project = tmp_path / "project.toml"
    project.write_text('LOG_TABLE = "from_project"\n')
    s = load(secrets_files=[secrets, tmp_path / "missing.toml", project])
    assert (s.table, s.batch_size) == ("from_project", 7)


def test_flags_override_every_file_and_none_means_not_given(sources):
    env_file, environ, secrets = sources
    s = load({"table": "from_flag", "backup_dir": None}, env_file=env_file, environ=environ, secrets_files=[secrets])
    assert (s.table, s.backup_dir) == ("from_flag", "/environ")


def test_an_empty_value_counts_as_unset():
    assert load(environ={"LOG_TABLE": "", "LOG_RETENTION_DAYS": ""}) == Settings()


def test_read_sources_names_settings_by_environment_name(sources):
    env_file, environ, secrets = sources
    raw = read_sources(environ=environ, env_file=env_file, secrets_files=[secrets])
    assert raw["LOG_TABLE"] == "from_secrets" and raw["LOG_RETENTION_DAYS"] == "10"
    assert set(raw) <= set(ENV_NAMES.values())


# --- validation: each error names the setting -------------------------------------------------


@pytest.mark.parametrize(
    "environ, setting",
    [
        ({"LOG_RETENTION_DAYS": "-1"}, "LOG_RETENTION_DAYS"),
        ({"LOG_RETENTION_DAYS": "thirty"}, "LOG_RETENTION_DAYS"),
        ({"LOG_RETENTION_DAYS": "400000"}, "LOG_RETENTION_DAYS"),
        ({"CLEANUP_BATCH_SIZE": "0"}, "CLEANUP_BATCH_SIZE"),
        ({"CLEANUP_BATCH_SIZE": "lots"}, "CLEANUP_BATCH_SIZE"),
        ({"BACKUP_GZIP_LEVEL": "10"}, "BACKUP_GZIP_LEVEL"),
        ({"SLACK_UPLOAD_MAX_BYTES": "-5"}, "SLACK_UPLOAD_MAX_BYTES"),
        ({"SLACK_NOTIFY_NOTHING_TO_DO": "maybe"}, "SLACK_NOTIFY_NOTHING_TO_DO"),
        ({"SLACK_TIMEOUT_S": "0"}, "SLACK_TIMEOUT_S"),
        ({"SLACK_TIMEOUT_S": "soon"}, "SLACK_TIMEOUT_S"),
        ({"LOG_TABLE": "a.b.c"}, "LOG_TABLE"),
        ({"LOG_TABLE": "x; DROP TABLE y"}, "LOG_TABLE"),
        ({"LOG_TABLE": "public.log"}, "LOG_TABLE"),  # schema.table on SQLite
        ({"LOG_TIMESTAMP_COLUMN": "created_at) OR (1=1"}, "LOG_TIMESTAMP_COLUMN"),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://u@h/db"}, "DATABASE_URL"),
        ({"DATABASE_URL": "sqlite:///:memory:"}, "DATABASE_URL"),
        ({"CLEANUP_TRIGGER_TOKEN": "short"}, "CLEANUP_TRIGGER_TOKEN"),
        ({"DASHBOARD_PASSWORD": "hunter2"}, "DASHBOARD_PASSWORD"),
    ],
)
def test_each_bad_value_is_refused_naming_its_setting(environ, setting):
    with pytest.raises(BadSetting) as caught:
        load(environ=environ)
    assert caught.value.name == setting
    assert caught.value.one_line().startswith(setting)
    assert "\n" not in caught.value.one_line()


def test_an_empty_backup_dir_flag_is_refused():
    with pytest.raises(BadSetting, match="^BACKUP_DIR"):
        load({"backup_dir": ""})


def test_with_overrides_validates_the_copy():
    s = load()
    assert s.with_overrides(table="other_log").table == "other_log"
    with pytest.raises(BadSetting, match="LOG_TABLE"):
        s.with_overrides(table="bad name")


def test_values_are_typed_from_text_and_from_toml(tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text("SLACK_NOTIFY_NOTHING_TO_DO = false\nSLACK_TIMEOUT_S = 5\nLOG_RETENTION_DAYS = 7\n")
    s = load(environ={"CLEANUP_BATCH_SIZE": "1_000"}, secrets_files=[secrets])
    assert (s.batch_size, s.retention_days, s.slack_timeout_s, s.slack_notify_nothing_to_do) == (1000, 7, 5.0, False)


# --- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("setting, minimum", [("CLEANUP_TRIGGER_TOKEN", 16), ("DASHBOARD_PASSWORD", 12)])
def test_short_secrets_are_refused_with_how_to_generate_one_and_without_the_value(setting, minimum):
    short = "s3cr3t-" + "x" * (minimum - 8)
    assert len(short) == minimum - 1
    with pytest.raises(BadSetting) as caught:
        load(environ={setting: short})
    line = caught.value.one_line()
    assert line.startswith(setting) and str(minimum) in line and GENERATE_SECRET in line
    assert short not in line
    assert load(environ={setting: short + "x"})  # exactly the minimum is enough


def test_masked_never_contains_a_secret():
    secrets = {"SLACK_BOT_TOKEN": "xoxb-secret-bot-token", "SLACK_WEBHOOK_URL": "https://hooks.test/secret-hook",
               "CLEANUP_TRIGGER_TOKEN": TOKEN, "DASHBOARD_PASSWORD": PASSWORD,
               "BACKUP_SIGNING_KEY": "signing-key-secret-0123", "GDRIVE_CREDENTIALS_JSON": '{"private_key": "gd-secret"}',
               "DATABASE_URL": "postgresql+psycopg2://user:db-secret@host/db?sslpassword=ssl-secret"}
    s = load(environ=secrets)
    shown = s.masked()
    assert set(shown) == set(ENV_NAMES.values())
    text = repr(shown) + repr(s)
    for value in ("xoxb-secret-bot-token", "secret-hook", TOKEN, PASSWORD, "db-secret", "ssl-secret",
                  "signing-key-secret-0123", "gd-secret"):
        assert value not in text, value
    assert {shown[ENV_NAMES[f]] for f in SECRET_FIELDS} == {SHOWN_FOR_A_SECRET}
    assert shown["DATABASE_URL"] == "postgresql+psycopg2://user:***@host/db?sslpassword=***"


def test_unset_secrets_are_shown_as_unset():
    shown = load().masked()
    assert all(shown[ENV_NAMES[f]] is None for f in SECRET_FIELDS)


def test_secret_fields_are_declared_secret():
    assert SECRET_FIELDS == {"slack_bot_token", "slack_webhook_url", "cleanup_trigger_token", "dashboard_password",
                             "backup_signing_key", "gdrive_credentials_json"}
    assert all(not SPECS[f].flag for f in SECRET_FIELDS)  # a flag would land in the shell history


# --- URL masking ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql+psycopg2://user:pw@host:5432/db", "postgresql+psycopg2://user:***@host:5432/db"),
        ("postgresql+psycopg2://user@host/db?password=s3cret", "postgresql+psycopg2://user@host/db?password=***"),
        ("postgresql://u@h/db?sslmode=require&PASSWORD=s3cret", "postgresql://u@h/db?sslmode=require&PASSWORD=***"),
        ("postgresql://u@h/db?sslpassword=s3cret&application_name=lrc",
         "postgresql://u@h/db?sslpassword=***&application_name=lrc"),
        ("postgresql://u@h/db?token=s3cret&Key=s3cret&secret=s3cret&access_token=s3cret",
         "postgresql://u@h/db?token=***&Key=***&secret=***&access_token=***"),
        ("postgresql://u:p%40ss@h/db?Secret=s3cret", "postgresql://u:***@h/db?Secret=***"),
        ("sqlite:///./local.db", "sqlite:///./local.db"),
        ("postgresql://u@/db?host=/var/run/postgresql", "postgresql://u@/db?host=/var/run/postgresql"),
    ],
)
def test_mask_url_hides_the_password_in_userinfo_and_query(url, shown):
    assert mask_url(url) == shown
    assert "s3cret" not in mask_url(url) and "p%40ss" not in mask_url(url)


def test_mask_url_of_an_unparseable_url_shows_only_its_scheme():
    assert mask_url("postgresql://user:pw@host:notaport/db") == "postgresql:…"


def test_a_bad_database_url_error_shows_it_masked():
    with pytest.raises(BadSetting) as caught:
        load(environ={"DATABASE_URL": "mysql://u:hidden@h/db?password=alsohidden"})
    assert "hidden" not in caught.value.one_line()


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "POSTGRESQL", "postgresql+psycopg2"])
def test_every_common_postgresql_spelling_connects_with_the_installed_driver(pg_admin_url, scheme):
    from sqlalchemy.engine import make_url

    from core.db import check_connection

    rest = pg_admin_url.split("://", 1)[1]
    s = load(environ={"DATABASE_URL": f"{scheme}://{rest}"})
    assert make_url(s.database_url).drivername == "postgresql+psycopg2"
    assert check_connection(s).dialect.driver == "psycopg2"  # SQLAlchemy 2.1 alone would import psycopg 3


@pytest.mark.parametrize("url", ["postgresql+psycopg://u@h/db", "postgresql+asyncpg://u@h/db", "sqlite+aiosqlite:///x.db"])
def test_a_url_naming_a_driver_that_is_not_installed_is_refused_in_one_line(url):
    with pytest.raises(BadSetting) as caught:
        load(environ={"DATABASE_URL": url})
    assert "DATABASE_URL" in caught.value.one_line() and "driver" in caught.value.one_line()
