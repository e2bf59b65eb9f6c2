"""Overview: how the log table is spread over time, and where the retention cutoff falls."""

from datetime import UTC, datetime, timedelta

import altair as alt
import pandas as pd
import streamlit as st

from core import RetentionError, i18n
from core.db import NO_SUCH_TABLE
from core.errors import BadSetting
from core.i18n import _, ngettext
from core.present import count, human_bytes, timestamp, zone_label
from core.space import EXPLANATION as SPACE_EXPLANATION
from core.zonedays import day_start
from ui import fmt
from ui.data import cached_stats, clear_caches
from ui.live import offer_demo_data, running_banner
from ui.state import settings_or_stop

settings = settings_or_stop()
OLDER, KEPT = _("older than the cutoff"), _("kept")
st.title(_("Overview"))

try:
    s = cached_stats(settings)
except RetentionError as exc:
    st.error(exc.localized(), icon=":material/error:")
    if isinstance(exc, BadSetting) and exc.why_msg.template == NO_SUCH_TABLE:
        offer_demo_data(settings)
    st.stop()

running_banner(settings)
for warning in s.warnings:
    st.warning(warning, icon=":material/speed:")

cutoff = datetime.now(UTC) - timedelta(days=settings.retention_days)
DAYS = ngettext("{n} day", "{n} days", settings.retention_days).format(n=count(settings.retention_days))
st.caption(_("Table **{table}** · counted {when} (refreshed at most every minute) · retention {days}: cutoff {cutoff}"
             ).format(table=s.table, when=timestamp(s.computed_at), days=DAYS, cutoff=timestamp(cutoff, seconds=False)))

c1, c2, c3, c4 = st.columns(4)
c1.metric(_("Total rows (estimate)") if s.estimated else _("Total rows"),
          ("≈ " if s.estimated else "") + count(s.total_rows), border=True,
          help=_("Estimated from PostgreSQL's planner statistics (pg_class.reltuples, pg_stats; refreshed by "
                 "ANALYZE), as are the per-day and age counts below; oldest and newest are exact. Preview and "
                 "Run cleanup count exactly.") if s.estimated else None)
c2.metric(_("Oldest row"), fmt.day(s.oldest), border=True, help=timestamp(s.oldest))
c3.metric(_("Newest row"), fmt.day(s.newest), border=True, help=timestamp(s.newest))
c4.metric(
    _("Table size"), human_bytes(s.table_bytes), border=True,
    help=_("Table, indexes and TOAST (pg_total_relation_size).") if s.table_bytes is not None
    else _("Shown on PostgreSQL only."),
)

with st.expander(_("Deleted rows and disk space: when does the space come back?"), icon=":material/storage:"):
    st.markdown(_(SPACE_EXPLANATION))

if not s.total_rows:
    st.info(_("{table} is empty: there is nothing to clean up.").format(table=s.table), icon=":material/inbox:")
    st.stop()

st.subheader(_("Rows per day"))
# Days of the display zone (core counted them so). Vega-Lite has no time zones but UTC and the browser's,
# so the chart draws wall times of the display zone on a UTC scale: a day's bar and the cutoff's rule
# land where that zone's clock puts them, whatever the browser's own zone.
ZONE = i18n.display_zone()
DAY = _("day ({zone})").format(zone=zone_label(d.day for d in s.per_day))
days = pd.DataFrame(
    {
        "day": [pd.Timestamp(d.day, tz="UTC") for d in s.per_day],
        "label": [d.day.isoformat() for d in s.per_day],
        "rows": [d.rows for d in s.per_day],
        # older: the whole day (in the display zone) is before the cutoff; the day holding it is kept
        "side": [OLDER if day_start(d.day + timedelta(days=1), ZONE) <= cutoff else KEPT for d in s.per_day],
    }
)
x_scale = alt.Scale(type="utc")
bars = (
    alt.Chart(days)
    .mark_bar(cornerRadiusTopLeft=2, cornerRadiusTopRight=2)
    .encode(
        x=alt.X("utcyearmonthdate(day):T", title=DAY, scale=x_scale, axis=alt.Axis(format=_("%b %d"), labelAngle=0)),
        y=alt.Y("rows:Q", title=_("rows per day")),
        color=alt.Color("side:N", title=None, scale=alt.Scale(domain=[OLDER, KEPT], range=["#e4572e", "#4c78a8"]),
                        legend=alt.Legend(orient="top")),
        tooltip=[alt.Tooltip("label:N", title=DAY), alt.Tooltip("rows:Q", title=_("rows"), format=",")],
    )
)
wall = pd.Timestamp(i18n.to_display(cutoff).replace(tzinfo=None), tz="UTC")  # the cutoff on the display zone's clock
marker = pd.DataFrame({"cutoff": [wall], "text": [_("cutoff: {days}").format(days=DAYS)]})
rule = alt.Chart(marker).mark_rule(color="#1c2430", strokeDash=[6, 4], size=2).encode(x=alt.X("cutoff:T", scale=x_scale))
label = (
    alt.Chart(marker)
    .mark_text(align="left", dx=6, fontWeight="bold", color="#1c2430")
    .encode(x=alt.X("cutoff:T", scale=x_scale), y=alt.value(8), text="text:N")
)
st.altair_chart((bars + rule + label).properties(height=320), width="stretch")

st.subheader(_("Rows by age"))
cols = st.columns(len(s.buckets))
for col, bucket in zip(cols, s.buckets, strict=True):
    col.metric(_(bucket.label), count(bucket.rows), fmt.share(bucket.rows, s.total_rows), delta_color="off",
               delta_arrow="off", border=True)

if st.button(_("Refresh counts"), icon=":material/refresh:", key="refresh_stats"):
    clear_caches()
    st.rerun()
