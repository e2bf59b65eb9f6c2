"""Live state on the pages: a cleanup run by another process (followed through its history row),
and the checks that make a destructive confirmation ask for the table name."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import streamlit as st

from core import Settings, cleanup_running, list_history
from core.i18n import _, ngettext
from core.models import RunStatus, utcnow
from core.present import count, lead_sentence, timestamp, trigger_label

SHARE_LIMIT = 0.9  # a cutoff removing more than this share of the table needs the table name typed
RECENT = timedelta(hours=24)  # ... and so does one removing rows younger than this


def needs_typed_confirmation(pending: dict[str, Any]) -> str | None:
    """Why this cleanup must be confirmed by typing the table name, or None."""
    rows, total, newest = pending["rows"], pending.get("total") or 0, pending.get("newest")
    if total and rows / total > SHARE_LIMIT:
        return _("This removes {share} of {table} ({rows} of {total} rows).").format(
            share=f"{100 * rows / total:.0f} %", table=pending["table"], rows=count(rows), total=count(total))
    if newest is not None and newest > utcnow() - RECENT:
        return _("This removes rows written in the last 24 hours (the newest affected row is from {when}).").format(
            when=timestamp(newest))
    return None


def _running_row(settings: Settings):
    return next((r for r in list_history(settings, limit=20) if r.status == RunStatus.RUNNING
                 and not r.awaiting_recovery), None)


@st.fragment(run_every=1.0)
def follow_other_process(settings: Settings) -> None:
    """A cleanup of another process (CLI, HTTP trigger, another server): its progress from the history
    journal every second, then its summary, whoever started it."""
    run = _running_row(settings)
    busy = cleanup_running(settings)
    if run is not None and busy:
        st.warning(_("A cleanup of {table} is running right now (started by {who} at {when}). This page will not "
                     "start another until it has finished.").format(table=settings.table,
                                                                   who=trigger_label(run.trigger),
                                                                   when=timestamp(run.started_at)),
                   icon=":material/lock_clock:")
        st.progress(0.0 if not run.rows_matched else min(1.0, run.rows_deleted / run.rows_matched),
                    text=ngettext("{n} row archived and deleted so far", "{n} rows archived and deleted so far",
                                  run.rows_deleted).format(n=count(run.rows_deleted)))
        st.session_state["followed_run"] = run.run_id
        return
    if busy:
        st.warning(_("A cleanup of {table} is running right now (started from the command line, the HTTP trigger or "
                     "another browser). This page will not start another until it has finished.").format(
            table=settings.table), icon=":material/lock_clock:")
        return
    followed = st.session_state.pop("followed_run", None)
    done = next((r for r in list_history(settings, limit=20) if r.run_id == followed), None)
    if done is not None:
        st.session_state["followed_summary"] = lead_sentence(done)
    st.rerun(scope="app")  # the lock is free: the page can offer Run again


@st.fragment(run_every=2.0)
def running_banner(settings: Settings) -> None:
    """Overview's "cleanup running" banner: counts below may be half-way until it ends."""
    if not cleanup_running(settings):
        if st.session_state.pop("banner_was_running", False):
            from .data import clear_caches

            clear_caches()
            st.rerun(scope="app")  # the run ended: fresh counts
        return
    st.session_state["banner_was_running"] = True
    run = _running_row(settings)
    done = ngettext("{n} row archived and deleted so far", "{n} rows archived and deleted so far",
                    run.rows_deleted).format(n=count(run.rows_deleted)) if run else ""
    st.info(_("A cleanup of {table} is running: the counts below may change until it ends.").format(
        table=settings.table) + (" " + done if done else ""), icon=":material/sync:")
    st.page_link("pages/run_cleanup.py", label=_("Follow it on Run Cleanup"), icon=":material/arrow_forward:")


def offer_demo_data(settings: Settings) -> None:
    """No table yet: say what the tool needs, and create the table with demo rows after a confirmation."""
    from core import demo_data

    from .data import clear_caches

    st.info(_("The table {table} does not exist in this database yet. Point LOG_TABLE and DATABASE_URL at your "
              "log table, or create it here with 5,000 demo chat rows over 90 days to try the tool.").format(
        table=settings.table), icon=":material/lightbulb:")
    sure = st.checkbox(_("Yes, create {table} with demo rows in this database").format(table=settings.table),
                       key="demo_confirm")
    if st.button(_("Create demo data"), key="demo_data", disabled=not sure, icon=":material/add_circle:"):
        with st.spinner(_("Creating demo rows…")):
            demo_data(settings, rows=5000, days=90)
        clear_caches()
        st.rerun()
