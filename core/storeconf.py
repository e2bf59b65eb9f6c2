"""The settings of where backups live beyond BACKUP_DIR: checks and derived values.

Kept out of ``config.py`` (which declares them) so that module stays one screenful of
declarations; imports nothing from the rest of the core but errors.
"""

from __future__ import annotations

from typing import Any

from .errors import BadSetting

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def check_store(env: str, value: str | None) -> None:
    """BACKUP_STORE: ``s3://bucket`` or ``s3://bucket/prefix``."""
    if value and (not value.startswith("s3://") or not value[5:].split("/", 1)[0]):
        raise BadSetting(env, value, "must be s3://bucket/prefix")


def check_bool(env: str, value: str | None) -> None:
    if value and value.strip().lower() not in _TRUE | _FALSE:
        raise BadSetting(env, value, "must be true or false")


def check_backup_days(env: str, value: str | None) -> None:
    if value and not (value.strip().isdigit() and 1 <= int(value) <= 36500):
        raise BadSetting(env, value, "must be a whole number of days between 1 and 36500")


def keep_local(settings: Any) -> bool:
    """BACKUP_KEEP_LOCAL, or its default: true without a store, false with one."""
    value = settings.backup_keep_local
    if value is None or not value.strip():
        return not settings.backup_store
    return value.strip().lower() in _TRUE


def backup_retention_days(settings: Any) -> int | None:
    """BACKUP_RETENTION_DAYS as a number, None when unset (keep forever)."""
    value = settings.backup_retention_days
    return int(value) if value and value.strip() else None
