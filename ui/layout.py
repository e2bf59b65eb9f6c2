"""Page furniture shared by every page: the page config and the sidebar's connection line."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import RetentionError, Settings
from core.i18n import _, ngettext
from core.policies import policies_of

from .state import POLICY_KEY, ZONE_KEY, apply_locale, chosen_policy, get_settings

FAVICON = Path(__file__).resolve().parent.parent / "static" / "favicon.png"  # served by Streamlit, never fetched
ZONES = ("UTC", "Asia/Seoul", "Asia/Tokyo", "Europe/London", "America/New_York", "America/Los_Angeles")


def page_config() -> None:
    st.set_page_config(page_title="Log Retention Console", page_icon=str(FAVICON), layout="wide")
    try:
        apply_locale(get_settings())  # the access gate speaks the configured language too
    except RetentionError:
        pass  # each page shows the setting error itself


def table_selector(settings: Settings) -> None:
    """The policy (table) every page works on, kept in session state; only with RETENTION_POLICIES_FILE."""
    policies = policies_of(settings)
    tables = [p.table for p in policies]
    if st.session_state.get(POLICY_KEY) not in tables:
        st.session_state[POLICY_KEY] = settings.table if settings.table in tables else tables[0]
    days = {p.table: p.retention_days for p in policies}
    st.sidebar.selectbox(_("Table"), tables, key=POLICY_KEY, format_func=lambda t: ngettext(
        "{table} ({n} day)", "{table} ({n} days)", days[t]).format(table=t, n=days[t]), help=_(
        "The retention policies of {file}; every page uses the one chosen.").format(file=settings.policies_file))


def sidebar_connection() -> None:
    """Which table of which database this dashboard works on (password masked)."""
    try:
        settings = apply_locale(get_settings())
        if settings.policies_file:
            table_selector(settings)
            settings = chosen_policy(settings)
    except RetentionError:
        return  # each page shows the setting error itself
    st.sidebar.caption(_("**{table}** · `{url}`").format(table=settings.table, url=settings.database_url_masked))
    zones = list(dict.fromkeys((settings.display_timezone, *ZONES)))
    st.sidebar.selectbox(_("Time zone"), zones, key=ZONE_KEY, help=_(
        "Times on every page are shown in this zone (this browser session only; DISPLAY_TIMEZONE is {zone})."
    ).format(zone=settings.display_timezone))
    apply_locale(settings)  # the session's zone applies from here on
