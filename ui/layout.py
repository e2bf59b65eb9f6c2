"""Page furniture shared by every page: the page config and the sidebar's connection line."""

from __future__ import annotations

import streamlit as st

from core import RetentionError, Settings
from core.policies import policies_of

from .state import POLICY_KEY, chosen_policy, get_settings


def page_config() -> None:
    st.set_page_config(page_title="Log Retention Console", page_icon=":material/inventory_2:", layout="wide")


def table_selector(settings: Settings) -> None:
    """The policy (table) every page works on, kept in session state; only with RETENTION_POLICIES_FILE."""
    policies = policies_of(settings)
    tables = [p.table for p in policies]
    if st.session_state.get(POLICY_KEY) not in tables:
        st.session_state[POLICY_KEY] = settings.table if settings.table in tables else tables[0]
    days = {p.table: p.retention_days for p in policies}
    st.sidebar.selectbox("Table", tables, key=POLICY_KEY, format_func=lambda t: f"{t} ({days[t]} days)",
                         help=f"The retention policies of {settings.policies_file}; every page uses the one chosen.")


def sidebar_connection() -> None:
    """Which table of which database this dashboard works on (password masked)."""
    try:
        settings = get_settings()
        if settings.policies_file:
            table_selector(settings)
            settings = chosen_policy(settings)
    except RetentionError:
        return  # each page shows the setting error itself
    st.sidebar.caption(f"**{settings.table}** on `{settings.database_url_masked}`")
