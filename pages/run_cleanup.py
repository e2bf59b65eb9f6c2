"""Run Cleanup: archive, verify, delete, record and report, after a confirmation.

The run uses exactly the cutoff the confirmation showed, and runs in a worker
thread (ui.jobs) so that leaving the page does not interrupt it.
"""

import streamlit as st

from core import RetentionError, Settings, cleanup_running, preview
from core.i18n import _, ngettext
from core.models import NotifyStatus, RunStatus
from core.present import count, human_bytes, human_duration, lead_sentence, space_sentence, timestamp
from core.runs import TrackedRun, registry
from ui import fmt, jobs
from ui.data import clear_caches
from ui.live import follow_other_process, needs_typed_confirmation
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


@st.dialog(_("Confirm cleanup"), width="medium", on_dismiss=_cancel)
def confirm_dialog(settings: Settings) -> None:
    pending = st.session_state.get(PENDING)
    if not pending:  # confirmed or cancelled: close the dialog with a full rerun
        st.rerun()
    cutoff, rows = timestamp(pending["cutoff"]), count(pending["rows"])
    if pending["dry_run"]:
        st.markdown(_("**Dry run** on **{table}**: counts the rows created before **{cutoff}** (now {rows}) and "
                      "records the dry run in the history. Nothing is written or deleted.").format(
            table=pending["table"], cutoff=cutoff, rows=rows))
        label = _("Run the dry run")
    else:
        slack = settings.slack_bot_token or settings.slack_webhook_url
        st.markdown(ngettext(
            "Archive **{rows} row** of **{table}** created before **{cutoff}** into a backup in `{dir}`, verify it, "
            "then **delete** exactly that row.",
            "Archive **{rows} rows** of **{table}** created before **{cutoff}** into a backup in `{dir}`, verify it, "
            "then **delete** exactly those rows.", pending["rows"]).format(
            rows=rows, table=pending["table"], cutoff=cutoff, dir=settings.backup_dir)
            + " " + (_("The report goes to Slack.") if slack else _("Slack is not configured: no report is sent.")))
        label = ngettext("Archive and delete {rows} row", "Archive and delete {rows} rows", pending["rows"]
                         ).format(rows=rows)
    typed_ok = True
    why = None if pending["dry_run"] else needs_typed_confirmation(pending)
    if why:
        st.warning(why, icon=":material/warning:")
        typed = st.text_input(_("Type the table name {table} to confirm").format(table=pending["table"]),
                              key="confirm_table_name")
        typed_ok = typed.strip() == pending["table"]
    left, right = st.columns(2)
    left.button(label, type="primary", key="confirm_run", on_click=_confirm, args=(settings,), width="stretch",
                disabled=not typed_ok)
    right.button(_("Cancel"), key="cancel_run", on_click=_cancel, width="stretch")


def _label(job: TrackedRun) -> str:
    if job.dry_run:
        return _("Counting the rows older than the cutoff…")
    if not job.rows_total:
        return _("Taking the cleanup lock and opening the backup…")
    return ngettext("{done} of {total} row archived and deleted", "{done} of {total} rows archived and deleted",
                    job.rows_total).format(done=count(job.rows_done), total=count(job.rows_total))


def show_progress(job: TrackedRun) -> None:
    bar = st.progress(job.fraction, text=_label(job))
    while not job.done.wait(0.25):
        bar.progress(job.fraction, text=_label(job))
    bar.empty()


def show_summary(job: TrackedRun) -> None:
    r = job.result
    if r is None:
        st.error(_("The cleanup did not run: {error}").format(
            error=job.exception.localized() if job.exception else job.error), icon=":material/error:")
    elif r.status == RunStatus.SUCCESS:
        st.success(_("Cleanup finished.") + " " + lead_sentence(r), icon=":material/check_circle:")
    elif r.status == RunStatus.DRY_RUN:
        st.info(_("Dry run finished.") + " " + lead_sentence(r), icon=":material/search:")
    elif r.status == RunStatus.PARTIAL:
        st.warning(lead_sentence(r), icon=":material/pause_circle:")
    elif r.status == RunStatus.NOTHING_TO_DO:
        st.info(lead_sentence(r), icon=":material/check:")
    else:
        st.error(lead_sentence(r), icon=":material/error:")
    if r is None or r.status == RunStatus.DRY_RUN:
        return
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(_("Rows archived"), count(r.rows_archived), border=True)
    c2.metric(_("Rows deleted"), count(r.rows_deleted), border=True)
    c3.metric(_("Rows skipped"), count(r.rows_skipped), border=True,
              help=_("Old rows kept because other rows still reference them (RESTRICT / NO ACTION)."))
    c4.metric(_("Duration"), human_duration(r.duration_s), border=True)
    for note in r.notes:
        st.info(note, icon=":material/info:")
    if r.backup_file:
        st.markdown(_("**Backup file:** `{file}` ({size})").format(file=fmt.file_name(r.backup_file),
                                                                  size=human_bytes(r.backup_bytes)))
        st.markdown("**SHA-256:**")
        st.code(r.sha256 or "—", language=None)
    if space_sentence(r):
        st.caption(_("**Space:** {text}").format(text=space_sentence(r)))
    slack = _("**Slack report:** {status}").format(status=NotifyStatus(r.notification).label) + (
        f" — {_(r.notification_detail)}" if r.notification_detail else "")
    if r.notification == NotifyStatus.FAILED:
        st.warning(slack + "\n\n" + _("The cleanup itself is complete; the failure is recorded in History."),
                   icon=":material/notifications_off:")
    else:
        st.markdown(slack)
    if r.recovered_runs:
        st.info(ngettext("Also recovered {n} interrupted run: {runs}", "Also recovered {n} interrupted runs: {runs}",
                         len(r.recovered_runs)).format(n=len(r.recovered_runs), runs=", ".join(r.recovered_runs)),
                icon=":material/healing:")


settings = settings_or_stop()
st.title(_("Run Cleanup"))
followed = st.session_state.pop("followed_summary", None)
if followed:  # the cleanup another process ran while this page watched it
    st.info(_("The cleanup that was running has finished.") + " " + followed, icon=":material/task_alt:")

job = st.session_state.get(JOB)
if job is not None:
    heading = st.empty()
    if job.running:
        heading.subheader(_("Cleanup running…"))
        show_progress(job)
    heading.subheader(_("Dry run") if job.dry_run else _("Last cleanup from this browser"))
    if st.session_state.get(CACHES_CLEARED) != job.run_id:  # once per finished run, not per rerun
        clear_caches()
        st.session_state[CACHES_CLEARED] = job.run_id
    show_summary(job)
    st.button(_("Dismiss"), key="dismiss_run", on_click=lambda: st.session_state.pop(JOB, None))
    st.page_link("pages/history.py", label=_("See it in History"), icon=":material/history:")
    st.divider()

try:
    busy = cleanup_running(settings)
except RetentionError as exc:
    st.error(exc.localized(), icon=":material/error:")
    st.stop()
attached = [other for other in registry.running() if other.run_id != getattr(job, "run_id", None)]
if busy and attached:  # a run of this process (any tab, any trigger): follow it live, then show its summary
    st.session_state[JOB] = attached[0]
    st.rerun()
if busy:
    st.warning(_("A cleanup of {table} is running right now (started from the command line, the HTTP trigger or "
                 "another browser). This page will not start another until it has finished.").format(
        table=settings.table), icon=":material/lock_clock:")
    follow_other_process(settings)
    st.button(_("Check again"), key="check_again", icon=":material/refresh:")
    st.stop()

choice = cutoff_picker(settings)
dry_run = st.toggle(_("Dry run: count only, write and delete nothing"), key="dry_run")
vacuum = st.checkbox(_("VACUUM the table afterwards") + (_(" (CLEANUP_VACUUM is on)") if settings.vacuum else ""),
                     value=settings.vacuum, key="vacuum", disabled=dry_run,
                     help=_("PostgreSQL: VACUUM (ANALYZE) marks the deleted rows' space reusable at once. SQLite: "
                            "VACUUM rewrites the file to give free pages back (locks the database meanwhile). "
                            "VACUUM FULL is never run by this console."))
if choice is None:  # an invalid value: nothing is counted from it, nothing can start (reason under the field)
    st.button(_("Run Cleanup"), type="primary", key="run_cleanup", icon=":material/delete_sweep:", disabled=True)
    st.stop()
try:
    p = preview(settings, **choice)
except RetentionError as exc:
    st.error(exc.localized(), icon=":material/error:")
    st.stop()
st.markdown(ngettext("**{n}** of {total} row of **{table}** is older than **{cutoff}**",
                     "**{n}** of {total} rows of **{table}** are older than **{cutoff}**", p.total_rows).format(
    n=count(p.rows_to_delete), total=count(p.total_rows), table=p.table, cutoff=timestamp(p.cutoff))
            + (_("; {n} more are kept because other rows still reference them.").format(n=count(p.rows_skipped))
               if p.rows_skipped else "."))
for warning in p.warnings:
    st.warning(warning, icon=":material/warning:")
if st.button(_("Run Cleanup"), type="primary", key="run_cleanup", icon=":material/delete_sweep:",
             disabled=bool(p.refusal) and not dry_run, help=p.refusal):
    st.session_state[PENDING] = {"cutoff": p.cutoff, "rows": p.rows_to_delete, "dry_run": dry_run, "table": p.table,
                                 "total": p.total_rows, "newest": p.newest, "vacuum": vacuum}
if st.session_state.get(PENDING):  # stays open while the table name is typed, until confirmed or cancelled
    confirm_dialog(settings)
