"""The dashboard's settings: ``core.config`` loads them; this module caches them and stops a page on a bad one.

Sources, in rising priority: defaults < ``.env`` < environment < the secrets files
Streamlit is configured with (``secrets.files``; top-level keys named like the
environment variables). The ``[auth]`` and ``[access]`` sections of ``st.secrets``
belong to the access gate (:mod:`ui.access`). Settings are rebuilt only when one of
their sources changed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import streamlit as st

from core import RetentionError, Settings, i18n
from core.config import ENV_FILE, ENV_NAMES, language_of_sources, load_dashboard_settings, read_sources
from core.policies import policies_of, settings_for_table


def secrets_dict() -> dict[str, Any]:
    """``st.secrets`` as a plain dict (for its ``[auth]`` and ``[access]`` sections), {} without a file."""
    try:
        if not st.secrets.load_if_toml_exists():
            return {}
        return st.secrets.to_dict()
    except (OSError, ValueError, AttributeError):  # an unreadable secrets file counts as none
        return {}


def secrets_files() -> list[str]:
    """The secrets files Streamlit reads (``secrets.files``), later ones overriding earlier ones."""
    return [str(p) for p in st.get_option("secrets.files") or []]


def _fingerprint() -> tuple[Any, ...]:
    env = tuple((name, os.environ.get(name)) for name in ENV_NAMES.values())
    files = []
    for path in (ENV_FILE, *secrets_files()):
        try:
            stat = Path(path).expanduser().stat()
            files.append((path, stat.st_mtime_ns, stat.st_size))
        except OSError:
            files.append((path, None, None))
    return env, tuple(files)


def build_settings() -> Settings:
    """Settings from every source, uncached (usable outside a script run, e.g. in an HTTP route)."""
    return load_dashboard_settings(secrets_files=secrets_files())


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

    try:
        apply_locale(get_settings())  # the sign-in form speaks the configured language too
    except RetentionError:  # reported below, once the session is in: in APP_LANGUAGE if that one is valid
        i18n.set_current(language=language_of_sources(secrets_files=secrets_files()))
    if not session_allowed():
        require_access()  # shows the sign-in form and stops
        st.stop()
    try:
        return apply_locale(chosen_policy(get_settings()))
    except RetentionError as exc:
        st.error(exc.localized(), icon=":material/settings_alert:")
        st.caption(i18n._("Fix the setting in `.env`, the environment or `.streamlit/secrets.toml`, then reload."))
        st.stop()
        raise  # unreachable: st.stop() raises


ZONE_KEY = "display_zone"


def apply_locale(settings: Settings) -> Settings:
    """Texts of this script run in APP_LANGUAGE; times in the session's zone (sidebar) or DISPLAY_TIMEZONE."""
    i18n.set_current(language=settings.app_language,
                     zone=st.session_state.get(ZONE_KEY) or settings.display_timezone)
    return settings


POLICY_KEY = "policy_table"  # session state: the table chosen in the sidebar (with a policy file)


def chosen_policy(settings: Settings) -> Settings:
    """With RETENTION_POLICIES_FILE: the settings of the policy chosen in the sidebar (else the first
    policy's, or LOG_TABLE's when a policy names it). Without one: ``settings``. Raises BadSetting."""
    if not settings.policies_file:
        return settings
    tables = [p.table for p in policies_of(settings)]
    chosen = st.session_state.get(POLICY_KEY)
    if chosen not in tables:
        chosen = settings.table if settings.table in tables else tables[0]
    return settings_for_table(settings, chosen)


def raw_password() -> str | None:
    """DASHBOARD_PASSWORD from the same sources as the settings, for the gate when the settings do not load."""
    value = read_sources(secrets_files=secrets_files()).get("DASHBOARD_PASSWORD")
    return str(value) if value else None


def settings_key(settings: Settings) -> str:
    """A cache key for everything a read depends on (the URL is hashed, never stored)."""
    ident = "\x00".join((settings.database_url, settings.table, settings.timestamp_column, settings.backup_dir))
    return hashlib.sha256(ident.encode()).hexdigest()[:16]
