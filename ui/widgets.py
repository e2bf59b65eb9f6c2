"""The cutoff picker shared by Preview and Run Cleanup (its choice follows the user across both)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import streamlit as st

from core import Settings, i18n
from core.i18n import N_, _

BY_DAYS, BY_DATE = N_("Retention days"), N_("Date")  # option values stay English; shown translated


def cutoff_picker(settings: Settings) -> dict[str, Any]:
    """Widgets for "older than N days" or "before a date"; returns preview/run_cleanup keyword arguments.

    Days give ``retention_days`` (the cutoff is now − N days when it is used); a date
    gives ``cutoff`` = that day 00:00 in the display zone (DISPLAY_TIMEZONE, or the sidebar's choice).
    Values persist for the session, across pages.
    """
    left, right = st.columns([1, 2], vertical_alignment="bottom")
    with left:
        mode = st.segmented_control(
            _("Cutoff by"), [BY_DAYS, BY_DATE], default=BY_DAYS, required=True, key="cutoff_mode",
            persist_state="session", format_func=_,
        )
    with right:
        if mode == BY_DATE:
            zone = ZoneInfo(i18n.display_zone())
            today = datetime.now(zone).date()
            abbr = i18n.zone_abbreviation(datetime.combine(today, time(0), tzinfo=zone))
            day = st.date_input(
                _("Archive and delete rows created before (00:00 {zone})").format(zone=abbr),
                value=today - timedelta(days=settings.retention_days), max_value=today, key="cutoff_date",
                persist_state="session",
            )
            if not isinstance(day, date):
                day = today - timedelta(days=settings.retention_days)
            return {"cutoff": datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)}
        days = st.number_input(
            _("Archive and delete rows older than (days)"), min_value=0, max_value=36_500,
            value=settings.retention_days, step=1, key="cutoff_days", persist_state="session",
            help=_("LOG_RETENTION_DAYS is {days}.").format(days=settings.retention_days),
        )
        return {"retention_days": int(days if days is not None else settings.retention_days)}
