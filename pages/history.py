"""History: past cleanup runs, newest first; failed runs and failed Slack reports stand out."""

import altair as alt
import pandas as pd
import streamlit as st

from core import RetentionError, i18n, list_history
from core.i18n import _, ngettext
from core.models import NotifyStatus, RunStatus
from core.present import (
    count,
    human_duration,
    runs_per_day,
    space_sentence,
    status_label,
    timestamp,
    trigger_label,
)
from ui import fmt
from ui.state import settings_or_stop

LIMIT = 200

settings = settings_or_stop()
st.title(_("History"))

try:
    runs = list_history(settings, limit=LIMIT)
except RetentionError as exc:
    st.error(exc.localized(), icon=":material/error:")
    st.stop()
if not runs:
    st.info(_("No cleanup of {table} has run yet.").format(table=settings.table), icon=":material/history:")
    st.stop()

f1, f2 = st.columns(2)
statuses = f1.multiselect(_("Status"), list(dict.fromkeys(str(r.status) for r in runs)), key="history_status",
                          format_func=lambda v: RunStatus(v).label, placeholder=_("All statuses"))
triggers = f2.multiselect(_("Trigger"), list(dict.fromkeys(str(r.trigger) for r in runs)), key="history_trigger",
                          format_func=trigger_label, placeholder=_("All triggers"))
shown = len(runs)
runs = [r for r in runs if (not statuses or str(r.status) in statuses) and (not triggers or str(r.trigger) in triggers)]
if not runs:
    st.info(_("No run matches these filters."), icon=":material/filter_alt_off:")
    st.stop()

failed = [r for r in runs if r.status in (RunStatus.FAILED, RunStatus.INTERRUPTED) or r.awaiting_recovery]
unreported = [r for r in runs if r.notification == NotifyStatus.FAILED]
if failed:
    st.error(ngettext("{n} run failed or was interrupted (of the last {total}); rows it deleted are in backups "
                      "that verify. Details below.",
                      "{n} runs failed or were interrupted (of the last {total}); rows they deleted are in backups "
                      "that verify. Details below.", len(failed)).format(n=len(failed), total=len(runs)),
             icon=":material/error:")
if unreported:
    st.warning(ngettext("{n} Slack report failed; the cleanups themselves are recorded here.",
                        "{n} Slack reports failed; the cleanups themselves are recorded here.",
                        len(unreported)).format(n=len(unreported)), icon=":material/notifications_off:")
st.caption(ngettext("The last {n} run of {table}, newest first (of {total}).",
                    "The last {n} runs of {table}, newest first (of {total}).", len(runs)).format(
    n=len(runs), table=settings.table, total=shown))

per_day = runs_per_day(runs)  # days of the display zone, as every time on this page
zone = i18n.zone_abbreviation(i18n.to_display(runs[0].started_at))
chart = pd.DataFrame({"day": [d.day.isoformat() for d in per_day], "runs": [d.runs for d in per_day],
                      "rows": [d.rows_deleted for d in per_day], "seconds": [d.seconds for d in per_day]})
base = alt.Chart(chart).encode(
    x=alt.X("day:O", title=_("day ({zone})").format(zone=zone), sort=None,
            axis=alt.Axis(labelAngle=-30, labelLimit=90, labelOverlap=True)),
    tooltip=[alt.Tooltip("day:N", title=_("day ({zone})").format(zone=zone)), alt.Tooltip("runs:Q", title=_("runs")),
             alt.Tooltip("rows:Q", title=_("rows deleted"), format=","),
             alt.Tooltip("seconds:Q", title=_("seconds"), format=".1f")])
st.caption(_("Rows deleted and time taken per day ({zone}), the runs shown below added up.").format(zone=zone))
left, right = st.columns(2)
# a bar at most as wide as a few days' worth: one day alone would otherwise fill the whole chart
bar_px = max(1, min(36, 280 // len(per_day)))
left.altair_chart(base.mark_bar(size=bar_px).encode(y=alt.Y("rows:Q", title=_("rows deleted"))).properties(height=200),
                  width="stretch")
right.altair_chart(base.mark_line(point=True).encode(y=alt.Y("seconds:Q", title=_("duration (s)")))
                   .properties(height=200), width="stretch")

st.dataframe(
    pd.DataFrame(
        {
            _("started"): [timestamp(r.started_at) for r in runs],
            _("status"): [status_label(r) for r in runs],
            _("trigger"): [trigger_label(r.trigger) for r in runs],
            _("cutoff"): [timestamp(r.cutoff, seconds=False) for r in runs],
            _("rows"): [r.rows_matched if r.status == RunStatus.DRY_RUN else r.rows_deleted for r in runs],
            _("skipped"): [r.rows_skipped for r in runs],
            _("duration"): [human_duration(r.duration_s) for r in runs],
            "Slack": [NotifyStatus(r.notification).label for r in runs],
            _("problem"): [r.error or (r.notification_detail if r.notification == NotifyStatus.FAILED else "")
                           or " · ".join(r.notes) for r in runs],
            _("backup"): [fmt.file_name(r.backup_file) for r in runs],
            _("space"): [space_sentence(r) or "" for r in runs],
            _("run id"): [r.run_id for r in runs],
        }
    ),
    hide_index=True,
    width="stretch",
    column_config={
        _("rows"): st.column_config.NumberColumn(
            format="localized",
            help=_("Rows archived and deleted; for a dry run, the rows it found older than the cutoff."),
        ),
        _("skipped"): st.column_config.NumberColumn(
            format="localized", help=_("Old rows kept because other rows still reference them (RESTRICT / NO ACTION).")
        ),
        _("problem"): st.column_config.TextColumn(width="large"),
        _("space"): st.column_config.TextColumn(
            width="large", help=_("The table's size before and after the run; dead tuples (PostgreSQL) or free "
                                  "pages (SQLite) until VACUUM.")),
    },
)

for r in failed + [r for r in unreported if r not in failed]:
    with st.expander(_("{status} · {when} · run {run}").format(status=status_label(r), when=timestamp(r.started_at),
                                                                run=r.run_id[:8])):
        if r.awaiting_recovery:
            st.markdown(_("The process running it died; the next cleanup recovers it (finishes its backup)."))
        if r.error:
            st.markdown(_("**Error:** {error}").format(error=r.error))
        st.markdown(f"**Slack:** {NotifyStatus(r.notification).label}"
                    + (f" — {_(r.notification_detail)}" if r.notification_detail else ""))
        st.markdown(_("**Rows deleted:** {n} · **backup:** `{file}`").format(n=count(r.rows_deleted),
                                                                         file=fmt.file_name(r.backup_file))
                    + (f" · **sha256:** `{r.sha256}`" if r.sha256 else ""))
