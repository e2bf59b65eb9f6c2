"""Page furniture shared by every page: the page config and the sidebar's connection line."""

from __future__ import annotations

import streamlit as st

from core import RetentionError
from core.i18n import _

from .state import ZONE_KEY, apply_locale, get_settings

ZONES = ("UTC", "Asia/Seoul", "Asia/Tokyo", "Europe/London", "America/New_York", "America/Los_Angeles")


def page_config() -> None:
    st.set_page_config(page_title="Log Retention Console", page_icon=":material/inventory_2:", layout="wide")
    try:
        apply_locale(get_settings())  # the access gate speaks the configured language too
    except RetentionError:
        pass  # each page shows the setting error itself


def sidebar_connection() -> None:
    """Which table of which database this dashboard works on (password masked)."""
    try:
        settings = apply_locale(get_settings())
    except RetentionError:
        return  # each page shows the setting error itself
    st.sidebar.caption(_("**{table}** · `{url}`").format(table=settings.table, url=settings.database_url_masked))
    zones = list(dict.fromkeys((settings.display_timezone, *ZONES)))
    st.sidebar.selectbox(_("Time zone"), zones, key=ZONE_KEY, help=_(
        "Times on every page are shown in this zone (this browser session only; DISPLAY_TIMEZONE is {zone})."
    ).format(zone=settings.display_timezone))
    apply_locale(settings)  # the session's zone applies from here on
