"""Settings, declared once: built-in default < ``.env`` < environment < secrets file < flags.

Each setting is one field of :class:`Settings` whose metadata (:class:`SettingSpec`)
holds its environment name, help text, parser, check, whether it is a secret and
its command-line flag. Everything else is derived from those declarations:
:data:`ENV_NAMES`, :data:`SECRET_FIELDS`, coercion, validation, masking for
display, the CLI's override flags and the README table's test.

:func:`load_settings` reads the sources and validates every value it can without
touching the database; a bad value raises :class:`BadSetting` naming the setting.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from .checks import (
    PARSER_BY_TYPE,
    Check,
    Parser,
    between,
    check_database_url,
    check_days,
    check_dependents,
    check_identifier,
    check_language,
    check_ms,
    check_not_empty,
    check_table,
    check_timeout,
    check_zone,
    min_length,
    to_database_url,
    to_float,
    to_int,
    to_text,
)
from .envfile import read_env_file
from .errors import BadSetting
from .i18n import N_
from .masking import mask_url, remember, url_secrets
from .storeconf import check_backup_days, check_bool, check_store

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 50_000
ENV_FILE = ".env"
# Where the dashboard's secrets live when Streamlit's ``secrets.files`` is not changed;
# later files override earlier ones (the project's over the user's), as in Streamlit.
DASHBOARD_SECRETS_FILES = ("~/.streamlit/secrets.toml", ".streamlit/secrets.toml")
SHOWN_FOR_A_SECRET = "•••••• (set)"

@dataclass(frozen=True)
class SettingSpec:
    """How one setting is read, checked, shown and documented (a field's ``metadata["setting"]``)."""

    env: str
    help: str
    parse: Parser
    check: Check | None = None
    secret: bool = False  # never shown: masked() says only that it is set
    mask: Callable[[str], str] | None = None  # shown through this (the database URL)
    flag: str | None = None  # the CLI option that overrides it, e.g. "--backup-dir"


def setting(env: str, default: Any, help: str, *, check: Check | None = None, secret: bool = False,  # noqa: A002
            mask: Callable[[str], str] | None = None, flag: str | None = None, parse: Parser | None = None) -> Any:
    """Declare one setting: a dataclass field carrying its :class:`SettingSpec`.

    The parser follows the default's type (bool, int, float, else text) unless ``parse`` is given.
    """
    parse = parse or PARSER_BY_TYPE.get(type(default), to_text)
    spec = SettingSpec(env=env, help=help, parse=parse, check=check,
                       secret=secret, mask=mask, flag=flag)
    return field(default=default, repr=not (secret or mask), metadata={"setting": spec})


@dataclass(frozen=True)
class Settings:
    """Effective configuration. Build it with :func:`load_settings`."""

    database_url: str = setting(
        "DATABASE_URL", "sqlite:///./local.db", "SQLAlchemy URL (PostgreSQL or SQLite)",
        check=check_database_url, mask=mask_url, flag="--database-url", parse=to_database_url)
    table: str = setting(
        "LOG_TABLE", "conversation_log", "log table, or schema.table on PostgreSQL",
        check=check_table, flag="--table")
    timestamp_column: str = setting(
        "LOG_TIMESTAMP_COLUMN", "created_at", "column the age is measured on",
        check=check_identifier, flag="--timestamp-column")
    timestamp_timezone: str | None = setting("LOG_TIMESTAMP_TIMEZONE", None, "zone of zone-less timestamp and date "
                                             "columns (default: the database's TimeZone; SQLite: UTC)", check=check_zone)
    retention_days: int = setting(
        "LOG_RETENTION_DAYS", 30, "rows strictly older than now - N days are archived and deleted",
        check=check_days)
    backup_dir: str = setting(
        "BACKUP_DIR", "./backups", "where backups are written", check=check_not_empty, flag="--backup-dir")
    backup_store: str | None = setting(
        "BACKUP_STORE", None, "s3://bucket/prefix: durable home of backups (AWS_* variables)", check=check_store)
    backup_keep_local: str | None = setting(
        "BACKUP_KEEP_LOCAL", None, "keep local copies once stored (default: true without a store)", check=check_bool)
    backup_retention_days: str | None = setting(
        "BACKUP_RETENTION_DAYS", None, "delete backups older than N days everywhere (unset: never)",
        check=check_backup_days)
    gdrive_folder_id: str | None = setting(
        "GDRIVE_FOLDER_ID", None, "copy each verified backup and manifest into this Google Drive (Shared Drive) folder")
    google_application_credentials: str | None = setting(
        "GOOGLE_APPLICATION_CREDENTIALS", None, "path of the Google service-account key (JSON) for GDRIVE_FOLDER_ID")
    gdrive_credentials_json: str | None = setting(
        "GDRIVE_CREDENTIALS_JSON", None, "the Google service-account key itself (JSON)", secret=True)
    gdrive_api_endpoint: str = setting(
        "GDRIVE_API_ENDPOINT", "https://www.googleapis.com/", "Google Drive API root (tests point it at a fake)")
    batch_size: int = setting(
        "CLEANUP_BATCH_SIZE", DEFAULT_BATCH_SIZE, "rows per archive-and-delete transaction",
        check=between(1, 1_000_000, "must be between 1 and 1000000"))
    gzip_level: int = setting(
        "BACKUP_GZIP_LEVEL", 1, "gzip level of backups, 0-9", check=between(0, 9, "must be between 0 and 9"))
    slack_bot_token: str | None = setting(
        "SLACK_BOT_TOKEN", None, "Slack bot token (xoxb-...): reports through the Web API", secret=True)
    slack_channel: str = setting("SLACK_CHANNEL", "ai-reports", "Slack channel name or ID")
    slack_webhook_url: str | None = setting(
        "SLACK_WEBHOOK_URL", None, "Slack incoming webhook, used when no bot token is set", secret=True)
    slack_api_base_url: str = setting("SLACK_API_BASE_URL", "https://slack.com/api/", "Slack Web API base")
    slack_upload_max_bytes: int = setting(
        "SLACK_UPLOAD_MAX_BYTES", 50 * 1024 * 1024, "larger backups are not uploaded to Slack",
        check=between(0, float("inf"), "must be 0 or more"))
    slack_notify_nothing_to_do: bool = setting(
        "SLACK_NOTIFY_NOTHING_TO_DO", True, "also report runs that found nothing to delete")
    slack_timeout_s: float = setting(
        "SLACK_TIMEOUT_S", 60.0, "upper bound on the time one Slack report may take", check=check_timeout)
    cleanup_trigger_token: str | None = setting(
        "CLEANUP_TRIGGER_TOKEN", None, "bearer token of the HTTP trigger; unset disables it",
        check=min_length(16), secret=True)
    dashboard_password: str | None = setting(
        "DASHBOARD_PASSWORD", None, "dashboard password when OIDC login is not configured",
        check=min_length(12), secret=True)
    cleanup_dependents: str = setting("CLEANUP_DEPENDENTS", "refuse", "refuse a cleanup that would cascade, "
                                      "set null or set default on other tables' rows", check=check_dependents)
    allow_delete_triggers: bool = setting("CLEANUP_ALLOW_DELETE_TRIGGERS", False,
                                          "let user DELETE triggers and rules on the table fire (recorded)")
    backup_signing_key: str | None = setting(
        "BACKUP_SIGNING_KEY", None, "HMAC-SHA256 key: manifests are signed; verify and restore refuse a bad "
        "or missing signature", check=min_length(16), secret=True)
    app_language: str = setting(
        "APP_LANGUAGE", "en", "ko or en: dashboard, Slack report and CLI human output (JSON stays English)",
        check=check_language)
    display_timezone: str = setting(
        "DISPLAY_TIMEZONE", "UTC", "zone of every displayed time, e.g. Asia/Seoul (stored times stay UTC)",
        check=check_zone)
    trusted_hosts: str | None = setting(
        "TRUSTED_HOSTS", None, "host names besides loopback the dashboard serves without a password "
        "(comma-separated; behind a reverse proxy)")
    policies_file: str | None = setting(
        "RETENTION_POLICIES_FILE", None, "TOML file of [[policy]] entries (several tables); unset: none is read")
    pause_ms: int = setting("CLEANUP_PAUSE_MS", 0, "pause between batches, in milliseconds", check=check_ms)
    batch_target_ms: int | None = setting(
        "CLEANUP_BATCH_TARGET_MS", None, "bound on one batch transaction's lock hold; the batch size adapts",
        check=check_ms, parse=to_int)
    max_replica_lag_s: float | None = setting(
        "CLEANUP_MAX_REPLICA_LAG_S", None, "PostgreSQL: pause while a replica lags more than this",
        check=check_ms, parse=to_float)
    lock_timeout_ms: int | None = setting(
        "CLEANUP_LOCK_TIMEOUT_MS", None, "longest wait of any cleanup statement for another session's lock "
        "(PostgreSQL lock_timeout, SQLite busy timeout)",
        check=check_ms, parse=to_int)
    vacuum: bool = setting("CLEANUP_VACUUM", False, "VACUUM (ANALYZE) the table after a cleanup (SQLite: VACUUM)")

    @property
    def table_parts(self) -> tuple[str | None, str]:
        """(schema or None, table name)."""
        if "." in self.table:
            schema, name = self.table.split(".", 1)
            return schema, name
        return None, self.table

    @property
    def database_url_masked(self) -> str:
        return mask_url(self.database_url)

    def masked(self) -> dict[str, Any]:
        """Every setting by environment name, for display: secrets hidden, the URL masked."""
        out: dict[str, Any] = {}
        for name, spec in SPECS.items():
            value = getattr(self, name)
            if value and spec.secret:
                value = SHOWN_FOR_A_SECRET
            elif value and spec.mask:
                value = spec.mask(value)
            out[spec.env] = value
        return out

    def with_overrides(self, **changes: Any) -> Settings:
        """A validated copy with some fields changed (flags, tests)."""
        return _validate(replace(self, **{k: v for k, v in changes.items() if v is not None}))


SPECS: dict[str, SettingSpec] = {f.name: f.metadata["setting"] for f in fields(Settings)}  # by field name, in field order
ENV_NAMES: dict[str, str] = {name: spec.env for name, spec in SPECS.items()}
SECRET_FIELDS = frozenset(name for name, spec in SPECS.items() if spec.secret)


def read_secrets_files(paths: Iterable[str | os.PathLike[str]]) -> dict[str, Any]:
    """The settings in Streamlit secrets TOML files: top-level keys named like environment variables.

    Later files override earlier ones. Sections (``[auth]``, ``[access]``) belong to the
    dashboard and are ignored; a missing file counts as empty, and so does an unreadable
    one (logged), as Streamlit's own loader treats it for the pages.
    """
    known = set(ENV_NAMES.values())
    out: dict[str, Any] = {}
    for path in paths:
        p = Path(path).expanduser()
        if not p.is_file():
            continue
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("ignoring the secrets file %s: %s", p, exc)
            continue
        out.update({k: v for k, v in doc.items() if k in known and not isinstance(v, Mapping)})
    return out


def read_sources(
    *,
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | None = ENV_FILE,
    secrets_files: Iterable[str | os.PathLike[str]] = (),
) -> dict[str, Any]:
    """Raw setting values by environment name, each from the highest source that sets it.

    Sources in rising priority: ``env_file``, ``environ`` (default ``os.environ``), the
    ``secrets_files``. An empty value counts as unset. Reads files; writes nothing.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for layer in (read_env_file(env_file) if env_file else {}, environ, read_secrets_files(secrets_files)):
        for env in ENV_NAMES.values():
            if layer.get(env) is not None and str(layer[env]) != "":
                raw[env] = layer[env]
    return raw


def language_of_sources(
    *, env_file: str | os.PathLike[str] | None = ENV_FILE, secrets_files: Iterable[str | os.PathLike[str]] = (),
) -> str | None:
    """APP_LANGUAGE from the sources, when valid, even if another setting is bad: the language
    in which that other setting's refusal is shown. None when unset or invalid. Reads files."""
    try:
        value = str(read_sources(env_file=env_file, secrets_files=secrets_files).get("APP_LANGUAGE", "")).strip()
    except (OSError, ValueError, BadSetting):  # an unreadable file: its own refusal follows, in English
        return None
    return value if value in ("en", "ko") else None


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | None = ENV_FILE,
    secrets_files: Iterable[str | os.PathLike[str]] = (),
) -> Settings:
    """Build validated Settings from every source, in rising priority.

    Defaults < ``env_file`` < ``environ`` < ``secrets_files`` < ``overrides``. ``overrides``
    are keyed by field name (``retention_days``; None means not given), the other sources
    by environment name (``LOG_RETENTION_DAYS``). Raises BadSetting naming the setting.
    Reads the files that exist; writes nothing.
    """
    by_env = read_sources(environ=environ, env_file=env_file, secrets_files=secrets_files)
    values = {name: by_env[spec.env] for name, spec in SPECS.items() if spec.env in by_env}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None and k in SPECS})
    typed = {name: SPECS[name].parse(SPECS[name].env, value) for name, value in values.items()}
    return _validate(Settings(**typed))


def load_dashboard_settings(*, secrets_files: Iterable[str | os.PathLike[str]] | None = None) -> Settings:
    """The settings the dashboard and its HTTP routes use: ``.env``, environment, secrets files.

    ``secrets_files`` defaults to :data:`DASHBOARD_SECRETS_FILES` (Streamlit's default
    locations; the pages pass Streamlit's configured ``secrets.files``). Streamlit also
    copies top-level secrets into the process environment when it starts, so routes
    served beside the pages see the same values whatever ``secrets.files`` says.
    """
    files = DASHBOARD_SECRETS_FILES if secrets_files is None else secrets_files
    return load_settings(env_file=ENV_FILE, secrets_files=files)


def _validate(s: Settings) -> Settings:
    """``s`` if every value passes its own check and the combinations are possible; else BadSetting."""
    remember([*url_secrets(s.database_url), *(getattr(s, name) for name in SECRET_FIELDS)])
    for name, spec in SPECS.items():
        if spec.check is not None:
            spec.check(spec.env, getattr(s, name))
    _check_together(s)
    return s


def _check_together(s: Settings) -> None:
    url = make_url(s.database_url)  # parses: check_database_url passed
    if url.get_backend_name() != "sqlite":
        return
    if "." in s.table:
        raise BadSetting("LOG_TABLE", s.table, N_("schema.table is only supported on PostgreSQL"))
    if url.database in (None, "", ":memory:"):
        raise BadSetting("DATABASE_URL", s.database_url, N_("SQLite needs a database file, not :memory:"))
