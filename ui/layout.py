"""Page furniture shared by every page: the page config and the sidebar's connection line."""

from __future__ import annotations

import streamlit as st

from core import RetentionError

from .state import get_settings


def page_config() -> None:
    st.set_page_config(page_title="Log Retention Console", page_icon=":material/inventory_2:", layout="wide")


def sidebar_connection() -> None:
    """Which table of which database this dashboard works on (password masked)."""
    try:
        settings = get_settings()
    except RetentionError:
        return  # each page shows the setting error itself
    st.sidebar.caption(f"**{settings.table}** on `{settings.database_url_masked}`")
