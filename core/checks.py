"""What a setting's value may be: parsers, checks and the masking of secrets in URLs.

Each parser and check takes the setting's environment name first, so that a refusal
is one line naming the setting (:class:`BadSetting`). Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url

from .errors import BadSetting
from .i18n import N_
from .masking import mask_url

# A plain SQL name: what we accept for tables and columns from configuration.
# Anything else (quotes, spaces, semicolons) is refused rather than escaped.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

GENERATE_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'

Parser = Callable[[str, Any], Any]  # (env name, raw value) -> typed value, or BadSetting
Check = Callable[[str, Any], None]  # (env name, typed value) -> None, or BadSetting


def to_text(env: str, value: Any) -> str:  # noqa: ARG001 (every parser takes the name)
    return str(value).strip()


def to_int(env: str, value: Any) -> int:
    if isinstance(value, bool):
        raise BadSetting(env, value, N_("must be a whole number"))
    if isinstance(value, int):
        return value
    text = str(value).strip().replace("_", "")
    if not re.fullmatch(r"[+-]?\d+", text):
        raise BadSetting(env, value, N_("must be a whole number"))
    return int(text)


def to_float(env: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BadSetting(env, value, N_("must be a number")) from None


def to_bool(env: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise BadSetting(env, value, N_("must be true or false"))


PARSER_BY_TYPE: dict[type, Parser] = {bool: to_bool, int: to_int, float: to_float}


def check_identifier(setting: str, name: str) -> str:
    """``name`` if it is a plain SQL name, else BadSetting (never quoted into SQL)."""
    if not IDENTIFIER.match(name or ""):
        raise BadSetting(
            setting, name, N_("must be a plain SQL name (letters, digits, _; not starting with a digit)")
        )
    return name


def between(low: float, high: float, why: str) -> Check:
    def check(env: str, value: Any) -> None:
        if not low <= value <= high:
            raise BadSetting(env, value, why)

    return check


MAX_DAYS = 36_500  # 100 years: more is a typo, not a retention (demo-data and BACKUP_RETENTION_DAYS agree)


def check_days(env: str, days: Any) -> int:
    """A number of days for a cutoff (``now − days``): a whole number from 0 to :data:`MAX_DAYS`.

    The one rule for LOG_RETENTION_DAYS, ``--retention-days``, a policy's ``retention_days`` and the
    dashboard's field. Returns ``days``; BadSetting (whose ``reason()`` a page shows) otherwise.
    """
    if isinstance(days, bool) or not isinstance(days, int):
        raise BadSetting(env, days, N_("must be a whole number"))
    if days < 0:
        raise BadSetting(env, days, N_("must be 0 or more days"))
    if days > MAX_DAYS:
        raise BadSetting(env, days, N_("must be at most {max} days (100 years)"), max=f"{MAX_DAYS:,}")
    return days


def check_timeout(env: str, seconds: float) -> None:
    if not 0 < seconds <= 3600:
        raise BadSetting(env, seconds, N_("must be between 0 and 3600 seconds"))


def check_table(env: str, table: str) -> None:
    parts = table.split(".")
    if len(parts) > 2:
        raise BadSetting(env, table, N_("must be table or schema.table"))
    for part in parts:
        check_identifier(env, part)


def check_not_empty(env: str, value: str) -> None:
    if not value:
        raise BadSetting(env, value, N_("must not be empty"))


def to_database_url(env: str, value: Any) -> str:
    """The URL with the driver this project installs: ``postgres://`` and ``postgresql://`` (what hosts such as
    Render print) mean psycopg2 (SQLAlchemy 2.1 would pick psycopg 3, which is not installed). A URL naming
    another driver is refused (BadSetting); it would fail at the first connection with an import error."""
    url = to_text(env, value)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url  # check_database_url words the refusal
    if scheme.lower() in ("postgres", "postgresql"):
        return f"postgresql+psycopg2://{rest}"
    if scheme.lower().startswith("postgresql+") and scheme.lower() != "postgresql+psycopg2":
        raise BadSetting(env, mask_url(url), N_("names a driver this tool does not install; use postgresql://"))
    if scheme.lower().startswith("sqlite+") and scheme.lower() != "sqlite+pysqlite":
        raise BadSetting(env, mask_url(url), N_("names a driver this tool does not install; use sqlite:///"))
    return url


def check_database_url(env: str, url: str) -> None:
    try:
        backend = make_url(url).get_backend_name()
    except Exception:  # noqa: BLE001 (any parse failure is the same bad setting)
        raise BadSetting(env, mask_url(url), N_("is not a SQLAlchemy URL")) from None
    if backend not in {"sqlite", "postgresql"}:
        raise BadSetting(env, mask_url(url), N_("must be sqlite:// or postgresql://"))


def check_zone(env: str, zone: str | None) -> None:
    try:
        ZoneInfo(zone) if zone is not None else None
    except (ZoneInfoNotFoundError, ValueError):
        raise BadSetting(env, zone, N_("is not an IANA time zone name (e.g. Asia/Seoul, UTC)")) from None


def check_language(env: str, value: str) -> None:
    if value not in ("en", "ko"):
        raise BadSetting(env, value, N_("must be en or ko"))


def check_dependents(env: str, value: str) -> None:
    if value != "refuse":  # "archive" (dependents archived with their parents) is planned
        raise BadSetting(env, value, N_("archive is planned, not available yet; must be refuse")
                         if value == "archive" else N_("must be refuse"))


def min_length(chars: int) -> Check:
    """A secret of at least ``chars`` characters; the refusal never shows the value."""

    def check(env: str, value: str | None) -> None:
        if value and len(value) < chars:
            raise BadSetting(env, None, N_("is shorter than {chars} characters; generate one with {command}"),
                             chars=chars, command=GENERATE_SECRET)

    return check


def check_ms(env: str, value: float | None) -> None:
    """A duration in milliseconds: 0 or more, at most a day (unset: None)."""
    if value is not None and not 0 <= value <= 86_400_000:
        raise BadSetting(env, value, N_("must be 0 or more (and at most a day)"))
