"""Preview: what a cleanup with this cutoff would archive and delete now. Changes nothing."""

import pandas as pd
import streamlit as st

from core import RetentionError, estimate_backup_bytes, preview, preview_sample
from core.i18n import _, ngettext
from core.present import count, human_bytes, timestamp
from ui import fmt
from ui.state import settings_or_stop
from ui.widgets import cutoff_picker

settings = settings_or_stop()
st.title(_("Preview"))
st.caption(_("Counts what a cleanup would archive and delete right now. Nothing is written or deleted here."))

choice = cutoff_picker(settings)
if choice is None:  # an invalid value: nothing is counted from it (the reason is under the field)
    st.page_link("pages/run_cleanup.py", label=_("Continue to Run Cleanup with this cutoff"),
                 icon=":material/arrow_forward:", disabled=True)
    st.stop()
try:
    p = preview(settings, **choice)
    estimate = estimate_backup_bytes(settings, rows=p.rows_to_delete)
    sample = preview_sample(settings, cutoff=p.cutoff, limit=10) if p.rows_to_delete else []
except RetentionError as exc:
    st.error(exc.localized(), icon=":material/error:")
    st.stop()

for warning in p.warnings:
    st.warning(warning, icon=":material/speed:")

st.markdown(_("Cutoff: rows of **{table}** created before **{cutoff}**").format(table=p.table,
                                                                             cutoff=timestamp(p.cutoff)))
c1, c2, c3 = st.columns(3)
c1.metric(_("Rows to archive and delete"), count(p.rows_to_delete), border=True)
c2.metric(_("Share of the table"), fmt.share(p.rows_to_delete, p.total_rows), border=True,
          help=ngettext("of {n} row", "of {n} rows", p.total_rows).format(n=count(p.total_rows)))
c3.metric(_("Estimated backup size"), human_bytes(estimate), border=True,
          help=_("gzip-compressed CSV; estimated from past backups' bytes per row, or before the first backup from "
                 "the average size of the oldest rows."))
c4, c5, c6 = st.columns(3)
c4.metric(_("Oldest affected"), fmt.day(p.oldest), border=True, help=timestamp(p.oldest))
c5.metric(_("Newest affected"), fmt.day(p.newest), border=True, help=timestamp(p.newest))
c6.metric(_("Rows kept"), count(p.total_rows - p.rows_to_delete), border=True,
          help=_("{n} of them are old but still referenced by other rows").format(n=count(p.rows_skipped))
          if p.rows_skipped else None)

if not p.rows_to_delete:
    st.info(_("No row is older than this cutoff: a cleanup now would have nothing to do."), icon=":material/check:")
    st.stop()

if p.partitions:
    st.subheader(_("Partitions"))
    st.caption(_("Partitions wholly older than the cutoff are archived, then dropped whole (no DELETE, no bloat); "
                 "the others lose only their old rows, deleted in batches."))
    st.dataframe(pd.DataFrame({_("partition"): [x.name for x in p.partitions],
                               _("range"): [x.bound.removeprefix("FOR VALUES ") for x in p.partitions],
                               _("action"): [_("archive, then drop") if x.action == "drop"
                                             else _("archive, then delete rows") for x in p.partitions],
                               _("rows"): [x.rows for x in p.partitions]}), hide_index=True, width="stretch")

st.subheader(_("Sample of affected rows"))
st.caption(ngettext("The {n} oldest row that would go; long text is shortened to 120 characters.",
                    "The {n} oldest rows that would go; long text is shortened to 120 characters.",
                    len(sample)).format(n=len(sample)))
rows = pd.DataFrame(sample)
if settings.timestamp_column in rows.columns:  # in the display zone with its abbreviation, as every time here
    rows[settings.timestamp_column] = [timestamp(v) for v in rows[settings.timestamp_column]]
first = [c for c in (rows.columns[0], settings.timestamp_column) if c in rows.columns]
st.dataframe(rows, hide_index=True, width="stretch", column_order=[*first, *(c for c in rows.columns if c not in first)])

st.page_link("pages/run_cleanup.py", label=_("Continue to Run Cleanup with this cutoff"), icon=":material/arrow_forward:")
