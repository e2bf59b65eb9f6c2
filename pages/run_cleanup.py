"""Run Cleanup: archive, verify, delete, record and report, after a confirmation.

The run uses exactly the cutoff the confirmation showed, and runs in a worker
thread (ui.jobs) so that leaving the page does not interrupt it.
"""

import streamlit as st

from core import RetentionError, Settings, cleanup_running, preview
from core.models import NotifyStatus, RunStatus
from core.present import count, human_bytes, human_duration, lead_sentence, plural, space_sentence, timestamp
from core.runs import TrackedRun
from ui import fmt, jobs
from ui.data import clear_caches
from ui.state import settings_or_stop
from ui.widgets import cutoff_picker

JOB, PENDING, CACHES_CLEARED = "cleanup_job", "pending_run", "caches_cleared_for"


def _confirm(settings: Settings) -> None:
    pending = st.session_state.pop(PENDING, None)
    if pending:
        if pending.get("vacuum"):
            settings = settings.with_overrides(vacuum=True)
        st.session_state[JOB] = jobs.start(settings, cutoff=pending["cutoff"], dry_run=pending["dry_run"],
                                           rows_expected=pending["rows"])


def _cancel() -> None:
    st.session_state.pop(PENDING, None)


@st.dialog("Confirm cleanup", width="medium")
def confirm_dialog(settings: Settings) -> None:
    pending = st.session_state.get(PENDING)
    if not pending:  # confirmed or cancelled: close the dialog with a full rerun
        st.rerun()
    cutoff, rows = timestamp(pending["cutoff"]), count(pending["rows"])
    if pending["dry_run"]:
        st.markdown(f"**Dry run** on **{pending['table']}**: counts the rows created before **{cutoff}** "
                    f"(now {rows}) and records the dry run in the history. Nothing is written or deleted.")
        label = "Run the dry run"
    else:
        st.markdown(f"Archive **{rows} rows** of **{pending['table']}** created before **{cutoff}** into a "
                    f"backup in `{settings.backup_dir}`, verify it, then **delete** exactly those rows "
                    f"and report to Slack.")
        label = f"Archive and delete {rows} rows"
    left, right = st.columns(2)
    left.button(label, type="primary", key="confirm_run", on_click=_confirm, args=(settings,), width="stretch")
    right.button("Cancel", key="cancel_run", on_click=_cancel, width="stretch")


def _label(job: TrackedRun) -> str:
    if job.dry_run:
        return "Counting the rows older than the cutoff…"
    if not job.rows_total:
        return "Taking the cleanup lock and opening the backup…"
    return f"{count(job.rows_done)} of {count(job.rows_total)} rows archived and deleted"


def show_progress(job: TrackedRun) -> None:
    bar = st.progress(job.fraction, text=_label(job))
    while not job.done.wait(0.25):
        bar.progress(job.fraction, text=_label(job))
    bar.empty()


def show_summary(job: TrackedRun) -> None:
    r = job.result
    if r is None:
        st.error(f"The cleanup did not run: {job.error}", icon=":material/error:")
    elif r.status == RunStatus.SUCCESS:
        st.success(f"Cleanup finished. {lead_sentence(r)}", icon=":material/check_circle:")
    elif r.status == RunStatus.DRY_RUN:
        st.info(f"Dry run finished. {lead_sentence(r)}", icon=":material/search:")
    elif r.status == RunStatus.PARTIAL:
        st.warning(lead_sentence(r), icon=":material/pause_circle:")
    elif r.status == RunStatus.NOTHING_TO_DO:
        st.info(lead_sentence(r), icon=":material/check:")
    else:
        st.error(lead_sentence(r), icon=":material/error:")
    if r is None or r.status == RunStatus.DRY_RUN:
        return
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Rows archived", count(r.rows_archived), border=True)
    c2.metric("Rows deleted", count(r.rows_deleted), border=True)
    c3.metric("Rows skipped", count(r.rows_skipped), border=True,
              help="Old rows kept because other rows still reference them (RESTRICT / NO ACTION).")
    c4.metric("Duration", human_duration(r.duration_s), border=True)
    for note in r.notes:
        st.info(note, icon=":material/info:")
    if r.backup_file:
        st.markdown(f"**Backup file:** `{fmt.file_name(r.backup_file)}` ({human_bytes(r.backup_bytes)})")
        st.markdown("**SHA-256:**")
        st.code(r.sha256 or "—", language=None)
    if space_sentence(r):
        st.caption(f"**Space:** {space_sentence(r)}")
    slack = f"**Slack report:** {NotifyStatus(r.notification).label}" + (
        f" — {r.notification_detail}" if r.notification_detail else "")
    if r.notification == NotifyStatus.FAILED:
        st.warning(slack + "\n\nThe cleanup itself is complete; the failure is recorded in History.",
                   icon=":material/notifications_off:")
    else:
        st.markdown(slack)
    if r.recovered_runs:
        st.info(f"Also recovered {plural(len(r.recovered_runs), 'interrupted run')}: "
                + ", ".join(r.recovered_runs), icon=":material/healing:")


settings = settings_or_stop()
st.title("Run Cleanup")

job = st.session_state.get(JOB)
if job is not None:
    heading = st.empty()
    if job.running:
        heading.subheader("Cleanup running…")
        show_progress(job)
    heading.subheader("Dry run" if job.dry_run else "Last cleanup from this browser")
    if st.session_state.get(CACHES_CLEARED) != job.run_id:  # once per finished run, not per rerun
        clear_caches()
        st.session_state[CACHES_CLEARED] = job.run_id
    show_summary(job)
    st.button("Dismiss", key="dismiss_run", on_click=lambda: st.session_state.pop(JOB, None))
    st.page_link("pages/history.py", label="See it in History", icon=":material/history:")
    st.divider()

try:
    busy = cleanup_running(settings)
except RetentionError as exc:
    st.error(exc.one_line(), icon=":material/error:")
    st.stop()
if busy:
    st.warning(f"A cleanup of {settings.table} is running right now (started from the command line, the HTTP "
               "trigger or another browser). This page will not start another until it has finished.",
               icon=":material/lock_clock:")
    for other in jobs.running_jobs():
        st.progress(other.fraction, text=f"Dashboard run {other.run_id[:8]}: {_label(other)}")
    st.button("Check again", key="check_again", icon=":material/refresh:")
    st.stop()

choice = cutoff_picker(settings)
dry_run = st.toggle("Dry run: count only, write and delete nothing", key="dry_run")
vacuum = st.checkbox("VACUUM the table afterwards" + (" (CLEANUP_VACUUM is on)" if settings.vacuum else ""),
                     value=settings.vacuum, key="vacuum", disabled=dry_run,
                     help="PostgreSQL: VACUUM (ANALYZE) marks the deleted rows' space reusable at once. SQLite: "
                          "VACUUM rewrites the file to give free pages back (locks the database meanwhile). "
                          "VACUUM FULL is never run by this console.")
try:
    p = preview(settings, **choice)
except RetentionError as exc:
    st.error(exc.one_line(), icon=":material/error:")
    st.stop()
st.markdown(f"**{count(p.rows_to_delete)}** of {count(p.total_rows)} rows of **{p.table}** are older "
            f"than **{timestamp(p.cutoff)}**"
            + (f"; {count(p.rows_skipped)} more are kept because other rows still reference them." if p.rows_skipped
               else "."))
for warning in p.warnings:
    st.warning(warning, icon=":material/warning:")
if st.button("Run Cleanup", type="primary", key="run_cleanup", icon=":material/delete_sweep:",
             disabled=bool(p.refusal) and not dry_run, help=p.refusal):
    st.session_state[PENDING] = {"cutoff": p.cutoff, "rows": p.rows_to_delete, "dry_run": dry_run, "table": p.table,
                                   "vacuum": vacuum}
    confirm_dialog(settings)
