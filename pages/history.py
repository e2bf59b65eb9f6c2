"""History: past cleanup runs, newest first; failed runs and failed Slack reports stand out."""

import pandas as pd
import streamlit as st

from core import RetentionError, list_history
from core.models import NotifyStatus, RunStatus
from core.present import count, human_duration, plural, status_label, timestamp
from ui import fmt
from ui.state import settings_or_stop

LIMIT = 200

settings = settings_or_stop()
st.title("History")

try:
    runs = list_history(settings, limit=LIMIT)
except RetentionError as exc:
    st.error(exc.one_line(), icon=":material/error:")
    st.stop()
if not runs:
    st.info(f"No cleanup of {settings.table} has run yet.", icon=":material/history:")
    st.stop()

failed = [r for r in runs if r.status in (RunStatus.FAILED, RunStatus.INTERRUPTED) or r.awaiting_recovery]
unreported = [r for r in runs if r.notification == NotifyStatus.FAILED]
if failed:
    st.error(f"{plural(len(failed), 'run')} failed or were interrupted (of the last {len(runs)}); "
             "rows they deleted are in backups that verify. Details below.", icon=":material/error:")
if unreported:
    st.warning(f"{plural(len(unreported), 'Slack report')} failed; the cleanups themselves are recorded "
               "here.", icon=":material/notifications_off:")
st.caption(f"The last {plural(len(runs), 'run')} of {settings.table}, newest first.")

st.dataframe(
    pd.DataFrame(
        {
            "started": [timestamp(r.started_at) for r in runs],
            "status": [status_label(r) for r in runs],
            "trigger": [r.trigger for r in runs],
            "cutoff": [timestamp(r.cutoff, seconds=False) for r in runs],
            "rows": [r.rows_matched if r.status == RunStatus.DRY_RUN else r.rows_deleted for r in runs],
            "skipped": [r.rows_skipped for r in runs],
            "backup": [fmt.file_name(r.backup_file) for r in runs],
            "duration": [human_duration(r.duration_s) for r in runs],
            "Slack": [NotifyStatus(r.notification).label for r in runs],
            "problem": [r.error or (r.notification_detail if r.notification == NotifyStatus.FAILED else "")
                        or " · ".join(r.notes) for r in runs],
            "run id": [r.run_id for r in runs],
        }
    ),
    hide_index=True,
    width="stretch",
    column_config={
        "rows": st.column_config.NumberColumn(
            format="localized", help="Rows archived and deleted; for a dry run, the rows it found older than the cutoff."
        ),
        "skipped": st.column_config.NumberColumn(
            format="localized", help="Old rows kept because other rows still reference them (RESTRICT / NO ACTION)."
        ),
        "problem": st.column_config.TextColumn(width="large"),
    },
)

for r in failed + [r for r in unreported if r not in failed]:
    with st.expander(f"{status_label(r)} · {timestamp(r.started_at)} · run {r.run_id[:8]}"):
        if r.awaiting_recovery:
            st.markdown("The process running it died; the next cleanup recovers it (finishes its backup).")
        if r.error:
            st.markdown(f"**Error:** {r.error}")
        st.markdown(f"**Slack:** {NotifyStatus(r.notification).label}"
                    + (f" — {r.notification_detail}" if r.notification_detail else ""))
        st.markdown(f"**Rows deleted:** {count(r.rows_deleted)} · **backup:** `{fmt.file_name(r.backup_file)}`"
                    + (f" · **sha256:** `{r.sha256}`" if r.sha256 else ""))
