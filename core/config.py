"""Settings: built-in defaults < ``.env`` < environment < ``st.secrets`` < flags.

``load_settings`` validates every value it can without touching the database and
raises :class:`BadSetting` naming the setting. Secrets are kept out of ``repr``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from sqlalchemy.engine import make_url

from .errors import BadSetting

# A plain SQL name: what we accept for tables and columns from configuration.
# Anything else (quotes, spaces, semicolons) is refused rather than escaped.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

DEFAULT_BATCH_SIZE = 50_000


@dataclass(frozen=True)
class Settings:
    """Effective configuration. Build it with :func:`load_settings`."""

    database_url: str = field(default="sqlite:///./local.db", repr=False)
    table: str = "conversation_log"
    timestamp_column: str = "created_at"
    retention_days: int = 30
    backup_dir: str = "./backups"
    batch_size: int = DEFAULT_BATCH_SIZE
    gzip_level: int = 1
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_channel: str = "ai-reports"
    slack_webhook_url: str | None = field(default=None, repr=False)
    slack_api_base_url: str = "https://slack.com/api/"
    slack_upload_max_bytes: int = 50 * 1024 * 1024
    slack_notify_nothing_to_do: bool = True
    slack_timeout_s: float = 60.0
    cleanup_trigger_token: str | None = field(default=None, repr=False)
    dashboard_password: str | None = field(default=None, repr=False)

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
        """Every setting by environment name, secrets replaced, for display."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "database_url":
                value = mask_url(value)
            elif f.name in SECRET_FIELDS and value:
                value = "•••••• (set)"
            out[ENV_NAMES[f.name]] = value
        return out

    def with_overrides(self, **changes: Any) -> Settings:
        """A validated copy with some fields changed (flags, tests)."""
        return _validate(replace(self, **{k: v for k, v in changes.items() if v is not None}))


SECRET_FIELDS = frozenset(
    {"slack_bot_token", "slack_webhook_url", "cleanup_trigger_token", "dashboard_password"}
)

ENV_NAMES = {
    "database_url": "DATABASE_URL",
    "table": "LOG_TABLE",
    "timestamp_column": "LOG_TIMESTAMP_COLUMN",
    "retention_days": "LOG_RETENTION_DAYS",
    "backup_dir": "BACKUP_DIR",
    "batch_size": "CLEANUP_BATCH_SIZE",
    "gzip_level": "BACKUP_GZIP_LEVEL",
    "slack_bot_token": "SLACK_BOT_TOKEN",
    "slack_channel": "SLACK_CHANNEL",
    "slack_webhook_url": "SLACK_WEBHOOK_URL",
    "slack_api_base_url": "SLACK_API_BASE_URL",
    "slack_upload_max_bytes": "SLACK_UPLOAD_MAX_BYTES",
    "slack_notify_nothing_to_do": "SLACK_NOTIFY_NOTHING_TO_DO",
    "slack_timeout_s": "SLACK_TIMEOUT_S",
    "cleanup_trigger_token": "CLEANUP_TRIGGER_TOKEN",
    "dashboard_password": "DASHBOARD_PASSWORD",
}


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***; never raises."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL is shown only by its scheme
        return url.split(":", 1)[0] + ":…"


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Parse a ``.env`` file: KEY=VALUE lines, optional ``export``, quotes, # comments."""
    p = Path(path)
    if not p.is_file():
        return {}
    out: dict[str, str] = {}
    for raw in p.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, value = line.split("=", 1)
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key] = value
    return out


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | None = ".env",
    secrets: Mapping[str, Any] | None = None,
) -> Settings:
    """Build validated Settings from every source, in rising priority.

    ``overrides`` are keyed by field name (``retention_days``), the other sources by
    environment name (``LOG_RETENTION_DAYS``). Raises BadSetting naming the setting.
    Reads ``env_file`` if it exists; writes nothing.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    layers: list[Mapping[str, Any]] = [read_env_file(env_file) if env_file else {}, environ]
    if secrets:
        layers.append(secrets)
    for layer in layers:
        for fname, env in ENV_NAMES.items():
            if env in layer and layer[env] is not None and str(layer[env]) != "":
                raw[fname] = layer[env]
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = value
    return _validate(_coerce(raw))


def _coerce(raw: Mapping[str, Any]) -> Settings:
    kwargs: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name not in raw:
            continue
        value, env = raw[f.name], ENV_NAMES[f.name]
        default = f.default
        if isinstance(default, bool):
            kwargs[f.name] = _to_bool(env, value)
        elif isinstance(default, int):
            kwargs[f.name] = _to_int(env, value)
        elif isinstance(default, float):
            try:
                kwargs[f.name] = float(value)
            except (TypeError, ValueError):
                raise BadSetting(env, value, "must be a number") from None
        else:
            kwargs[f.name] = str(value).strip()
    return Settings(**kwargs)


def _to_int(env: str, value: Any) -> int:
    if isinstance(value, bool):
        raise BadSetting(env, value, "must be a whole number")
    if isinstance(value, int):
        return value
    text = str(value).strip().replace("_", "")
    if not re.fullmatch(r"[+-]?\d+", text):
        raise BadSetting(env, value, "must be a whole number")
    return int(text)


def _to_bool(env: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise BadSetting(env, value, "must be true or false")


def check_identifier(setting: str, name: str) -> str:
    """``name`` if it is a plain SQL name, else BadSetting (never quoted into SQL)."""
    if not IDENTIFIER.match(name or ""):
        raise BadSetting(
            setting, name, "must be a plain SQL name (letters, digits, _; not starting with a digit)"
        )
    return name


def _validate(s: Settings) -> Settings:
    if s.retention_days < 0:
        raise BadSetting("LOG_RETENTION_DAYS", s.retention_days, "must be 0 or more days")
    if s.retention_days > 365_000:
        raise BadSetting("LOG_RETENTION_DAYS", s.retention_days, "is more than 1000 years")
    if not 1 <= s.batch_size <= 1_000_000:
        raise BadSetting("CLEANUP_BATCH_SIZE", s.batch_size, "must be between 1 and 1000000")
    if not 0 <= s.gzip_level <= 9:
        raise BadSetting("BACKUP_GZIP_LEVEL", s.gzip_level, "must be between 0 and 9")
    if s.slack_upload_max_bytes < 0:
        raise BadSetting("SLACK_UPLOAD_MAX_BYTES", s.slack_upload_max_bytes, "must be 0 or more")
    if not 0 < s.slack_timeout_s <= 3600:
        raise BadSetting("SLACK_TIMEOUT_S", s.slack_timeout_s, "must be between 0 and 3600 seconds")
    parts = s.table.split(".")
    if len(parts) > 2:
        raise BadSetting("LOG_TABLE", s.table, "must be table or schema.table")
    for part in parts:
        check_identifier("LOG_TABLE", part)
    check_identifier("LOG_TIMESTAMP_COLUMN", s.timestamp_column)
    if not s.backup_dir:
        raise BadSetting("BACKUP_DIR", s.backup_dir, "must not be empty")
    try:
        url = make_url(s.database_url)
    except Exception:
        raise BadSetting("DATABASE_URL", mask_url(s.database_url), "is not a SQLAlchemy URL") from None
    backend = url.get_backend_name()
    if backend not in {"sqlite", "postgresql"}:
        raise BadSetting("DATABASE_URL", mask_url(s.database_url), "must be sqlite:// or postgresql://")
    if backend == "sqlite" and "." in s.table:
        raise BadSetting("LOG_TABLE", s.table, "schema.table is only supported on PostgreSQL")
    if backend == "sqlite" and (url.database in (None, "", ":memory:")):
        raise BadSetting("DATABASE_URL", s.database_url, "SQLite needs a database file, not :memory:")
    return s
