"""Effective settings for the dashboard: defaults < .env < environment < ``st.secrets``.

Top-level keys of ``st.secrets`` named like the environment variables
(``DATABASE_URL``, ``DASHBOARD_PASSWORD``, …) override the environment; the
``[auth]`` section configures ``st.login``. Settings are rebuilt only when one of
their sources changed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import streamlit as st

from core import RetentionError, Settings, load_settings
from core.config import ENV_NAMES, read_env_file

ENV_FILE = ".env"


def secrets_dict() -> dict[str, Any]:
    """``st.secrets`` as a plain dict, or {} when no secrets file exists."""
    try:
        if not st.secrets.load_if_toml_exists():
            return {}
        return st.secrets.to_dict()
    except (OSError, ValueError, AttributeError):  # an unreadable secrets file counts as none
        return {}


def settings_secrets(secrets: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The top-level secrets that are settings (by environment name), as load_settings wants them."""
    secrets = secrets_dict() if secrets is None else secrets
    return {k: v for k, v in secrets.items() if k in ENV_NAMES.values() and not isinstance(v, Mapping)}


def _fingerprint() -> tuple[Any, ...]:
    env = tuple((name, os.environ.get(name)) for name in ENV_NAMES.values())
    try:
        stat = Path(ENV_FILE).stat()
        env_file = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        env_file = None
    return env, env_file, tuple(sorted((k, str(v)) for k, v in settings_secrets().items()))


def build_settings() -> Settings:
    """Settings from every source, uncached (usable outside a script run, e.g. in an HTTP route)."""
    return load_settings(secrets=settings_secrets() or None, env_file=ENV_FILE)


@st.cache_resource(show_spinner=False, max_entries=8)
def _load(fingerprint: tuple[Any, ...]) -> Settings:  # noqa: ARG001 (the cache key)
    return build_settings()


def get_settings() -> Settings:
    """Validated settings; raises RetentionError (BadSetting) naming the bad setting."""
    return _load(_fingerprint())


def settings_or_stop() -> Settings:
    """Settings for a page; stops the page when the session has not passed the gate, or on a bad setting.

    The router gates every page already; this second check keeps a page from ever
    running for a session that did not pass it, however the page was reached.
    """
    from .access import require_access, session_allowed

    if not session_allowed():
        require_access()  # shows the sign-in form and stops
        st.stop()
    try:
        return get_settings()
    except RetentionError as exc:
        st.error(exc.one_line(), icon=":material/settings_alert:")
        st.caption("Fix the setting in `.env`, the environment or `.streamlit/secrets.toml`, then reload.")
        st.stop()
        raise  # unreachable: st.stop() raises


def raw_password() -> str | None:
    """DASHBOARD_PASSWORD from the same sources as the settings, when the settings do not load."""
    for layer in (settings_secrets(), os.environ, read_env_file(ENV_FILE)):
        value = layer.get("DASHBOARD_PASSWORD")
        if value:
            return str(value)
    return None


def settings_key(settings: Settings) -> str:
    """A cache key for everything a read depends on (the URL is hashed, never stored)."""
    import hashlib

    ident = "\x00".join((settings.database_url, settings.table, settings.timestamp_column, settings.backup_dir))
    return hashlib.sha256(ident.encode()).hexdigest()[:16]
