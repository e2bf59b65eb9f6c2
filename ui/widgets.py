"""The cutoff picker shared by Preview and Run Cleanup (its choice follows the user across both).

The fields take any value the user types (no Streamlit bounds, which clamp or silently keep
the last accepted value) and the value is checked with the core's own rule
(:func:`core.timefmt.resolve_cutoff`, which preview and run_cleanup apply too): an invalid
value is shown with its reason under the field, and the picker returns None, so the page
computes nothing from it and its buttons stay off.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import streamlit as st

from core import Settings, i18n
from core.checks import to_int
from core.errors import BadSetting
from core.i18n import N_, _
from core.timefmt import resolve_cutoff

BY_DAYS, BY_DATE = N_("Retention days"), N_("Date")  # option values stay English; shown translated
MODE_KEY, DAYS_KEY, DATE_KEY = "cutoff_mode", "cutoff_days", "cutoff_date"
# The date field's own bounds are wide on purpose: a day outside them would be refused by the
# browser without telling the page; every day inside is checked by the core's rule.
FIRST_DAY, LAST_DAY = date(1, 1, 1), date(9999, 12, 31)


def invalid_reason(settings: Settings, choice: dict[str, Any]) -> str | None:
    """Why ``choice`` (``retention_days`` or ``cutoff``) cannot be used, in the active language; None if it can.

    The core's own check (the one preview and run_cleanup apply), so the page and the core never disagree.
    """
    try:
        resolve_cutoff(retention_days=choice.get("retention_days"), cutoff=choice.get("cutoff"),
                       default_days=settings.retention_days)
    except BadSetting as exc:
        return exc.reason()
    return None


def _refuse(value: str | None, reason: str) -> None:
    st.error(reason if value is None else _("{value}: {reason}").format(value=value, reason=reason),
             icon=":material/block:")
    st.caption(_("Preview and Run Cleanup stay off until the value is valid."))


def _last(key: str, default: Any) -> Any:
    """The value widget ``key`` last had in this session, else ``default``.

    Passed as the widget's initial value: a widget's own state is dropped when a page without
    it runs, so the last value is kept under a plain session key (:func:`_keep`) and the choice
    follows the user to the other page, an empty or invalid one included.
    """
    return st.session_state.get(f"{key}_last", default)


def _keep(key: str, value: Any) -> Any:
    st.session_state[f"{key}_last"] = value
    return value


def cutoff_picker(settings: Settings) -> dict[str, Any] | None:
    """Widgets for "older than N days" or "before a date"; returns preview/run_cleanup keyword arguments,
    or None when the value typed is invalid (its reason is shown under the field).

    Days give ``retention_days`` (the cutoff is now − N days when it is used); a date
    gives ``cutoff`` = that day 00:00 in the display zone (DISPLAY_TIMEZONE, or the sidebar's choice).
    Values persist for the session, across pages.
    """
    left, right = st.columns([1, 2], vertical_alignment="top")
    with left:
        mode = _keep(MODE_KEY, st.segmented_control(_("Cutoff by"), [BY_DAYS, BY_DATE], default=_last(MODE_KEY, BY_DAYS),
                                                    required=True, key=MODE_KEY, format_func=_))
    with right:
        if mode == BY_DATE:
            zone = ZoneInfo(i18n.display_zone())
            today = datetime.now(zone).date()
            abbr = i18n.zone_abbreviation(datetime.combine(today, time(0), tzinfo=zone))
            day = _keep(DATE_KEY, st.date_input(
                _("Archive and delete rows created before (00:00 {zone})").format(zone=abbr),
                value=_last(DATE_KEY, today - timedelta(days=settings.retention_days)),
                min_value=FIRST_DAY, max_value=LAST_DAY, key=DATE_KEY,
            ))
            if not isinstance(day, date):
                _refuse(None, _("Enter a date."))
                return None
            choice: dict[str, Any] = {"cutoff": datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)}
            shown = day.isoformat()
        else:
            raw = _keep(DAYS_KEY, st.text_input(  # text: what is typed is what is checked (no clamping, no rounding)
                _("Archive and delete rows older than (days)"), value=_last(DAYS_KEY, str(settings.retention_days)),
                key=DAYS_KEY, placeholder=_("a number of days"),
                help=_("LOG_RETENTION_DAYS is {days}.").format(days=settings.retention_days),
            )).strip()
            if not raw:
                _refuse(None, _("Enter a number of days."))
                return None
            try:
                choice, shown = {"retention_days": to_int(DAYS_KEY, raw)}, raw
            except BadSetting as exc:
                _refuse(raw, exc.reason())
                return None
        why = invalid_reason(settings, choice)
        if why:
            _refuse(shown, why)
            return None
        return choice
