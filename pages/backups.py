"""Backups: every backup file; download (exact or spreadsheet-safe), verify, restore after a confirmation."""

from functools import partial
from pathlib import Path

import pandas as pd
import streamlit as st

from core import RetentionError, Settings, restore_backup, verify_backup
from core.backup.source import current_source, describe_source, same_source
from core.i18n import _, ngettext
from core.models import BackupInfo
from core.present import count, human_bytes, human_duration, timestamp
from ui import downloads
from ui.data import cached_backups, clear_caches
from ui.state import settings_or_stop

RESTORE, RESTORE_DONE = "pending_restore", "restore_outcome"


def _confirm_restore(settings: Settings) -> None:
    name = st.session_state.pop(RESTORE, None)
    if not name:
        return
    try:
        r = restore_backup(settings, name, trigger="dashboard")
        st.session_state[RESTORE_DONE] = ("success", ngettext(
            "Restored {n} row of {name} into {table}; {skipped} were already present and skipped ({duration}).",
            "Restored {n} rows of {name} into {table}; {skipped} were already present and skipped ({duration}).",
            r.rows_restored).format(n=count(r.rows_restored), name=name, table=r.table, skipped=count(r.rows_skipped),
                                    duration=human_duration(r.duration_s)))
    except RetentionError as exc:
        st.session_state[RESTORE_DONE] = ("error", _("Restore refused, the table is unchanged: {error}").format(
            error=exc.one_line()))
    clear_caches()


@st.dialog(_("Restore backup"), width="medium")
def restore_dialog(settings: Settings, b: BackupInfo) -> None:
    if not st.session_state.get(RESTORE):
        st.rerun()
    st.markdown(ngettext(
        "Put the **{n} row** of `{file}` back in **{table}**.", "Put the **{n} rows** of `{file}` back in **{table}**.",
        b.rows or 0).format(n=count(b.rows), file=Path(b.file).name, table=settings.table) + " " + _(
        "The backup is verified first; rows whose primary key is already in the table are skipped. "
        "All or nothing: on any error the table is unchanged."))
    left, right = st.columns(2)
    left.button(ngettext("Restore {n} row", "Restore {n} rows", b.rows or 0).format(n=count(b.rows)), type="primary",
                key="confirm_restore", on_click=_confirm_restore, args=(settings,), width="stretch")
    right.button(_("Cancel"), key="cancel_restore", on_click=lambda: st.session_state.pop(RESTORE, None),
                 width="stretch")


settings = settings_or_stop()
st.title(_("Backups"))
st.caption(_("Files in `{dir}`, newest first. Each one is a gzip-compressed CSV with a manifest (row count, SHA-256) "
             "beside it.").format(dir=settings.backup_dir))

outcome = st.session_state.pop(RESTORE_DONE, None)
if outcome:
    (st.success if outcome[0] == "success" else st.error)(outcome[1])

try:
    backups = cached_backups(settings)
except (RetentionError, OSError) as exc:
    st.error(exc.one_line() if isinstance(exc, RetentionError)
             else _("Cannot list {dir}: {error}").format(dir=settings.backup_dir, error=exc))
    st.stop()
if not backups:
    st.info(_("No backups yet: a cleanup that archives rows writes one here."), icon=":material/inventory_2:")
    st.stop()
try:
    here = current_source(settings)
except RetentionError as exc:
    st.error(exc.one_line(), icon=":material/error:")
    st.stop()
others = [b for b in backups if not b.error and not same_source(b.source, here)]
if others:
    show_others = st.toggle(ngettext("Show {n} backup of other databases or tables",
                                     "Show {n} backups of other databases or tables", len(others)).format(
        n=len(others)), key="backups_other_sources", help=_(
        "Backups whose manifest names another database or table (e.g. another console sharing this folder). "
        "Restoring one here is refused; the command line can force it (restore --force-other-source)."))
    if not show_others:
        backups = [b for b in backups if b not in others]
    if not backups:
        st.info(_("No backup of {source} yet.").format(source=describe_source(here)), icon=":material/inventory_2:")
        st.stop()

table = pd.DataFrame(
    {
        _("file"): [Path(b.file).name for b in backups],
        _("rows"): [b.rows for b in backups],
        _("cutoff"): [timestamp(b.cutoff, seconds=False) for b in backups],
        _("created"): [timestamp(b.created_at, seconds=False) for b in backups],
        _("size"): [human_bytes(b.size_bytes) for b in backups],
        _("source"): [_("this table") if same_source(b.source, here) else describe_source(b.source) for b in backups],
        _("oldest row"): [timestamp(b.min_timestamp, seconds=False) for b in backups],
        _("newest row"): [timestamp(b.max_timestamp, seconds=False) for b in backups],
        **({_("error"): [b.error or "" for b in backups]} if any(b.error for b in backups) else {}),
        "sha256": [b.sha256 for b in backups],
    }
)
st.dataframe(table, hide_index=True, width="stretch",
             column_config={_("rows"): st.column_config.NumberColumn(format="localized"),
                            "sha256": st.column_config.TextColumn(width="medium")})

names = [Path(b.file).name for b in backups]
name = st.selectbox(_("Backup"), names, key="backup_name")
b = backups[names.index(name)]
st.caption(_("{rows} · created {created} · cutoff {cutoff} · run {run}").format(
    rows=ngettext("{n} row", "{n} rows", b.rows or 0).format(n=count(b.rows)),
    created=timestamp(b.created_at, seconds=False), cutoff=timestamp(b.cutoff, seconds=False), run=b.run_id or "—"))

c1, c2, c3, c4 = st.columns(4)
if downloads.streamed_available():
    c1.link_button(_("Download backup"), downloads.link(name, "backup"), icon=":material/download:", width="stretch")
    c2.link_button(_("Download for spreadsheets"), downloads.link(name, "spreadsheet"), icon=":material/table:",
                   width="stretch")
else:
    c1.download_button(_("Download backup"), partial(downloads.read_backup, settings, name), file_name=name,
                       mime="application/gzip", key="download_backup", icon=":material/download:",
                       on_click="ignore", width="stretch")
    c2.download_button(_("Download for spreadsheets"), partial(downloads.read_spreadsheet, settings, name),
                       file_name=downloads.spreadsheet_name(name), mime="text/csv", key="download_spreadsheet",
                       icon=":material/table:", on_click="ignore", width="stretch")
verify = c3.button(_("Verify"), key="verify_backup", icon=":material/verified:", width="stretch")
if c4.button(_("Restore…"), key="restore_backup", icon=":material/settings_backup_restore:", width="stretch"):
    st.session_state[RESTORE] = name
    restore_dialog(settings, b)
st.caption(_("The spreadsheet-safe copy is plain CSV with cells starting with = + - @, tab or CR prefixed by an "
             "apostrophe, so Excel does not run them as formulas. The backup file itself is never changed."))

if verify:
    try:
        with st.spinner(_("Reading {name}…").format(name=name)):
            v = verify_backup(settings, name)
    except RetentionError as exc:
        st.error(exc.one_line(), icon=":material/error:")
    else:
        if v.ok:
            st.success(ngettext("{name} verifies: {n} row, SHA-256 matches the manifest.",
                                "{name} verifies: {n} rows, SHA-256 matches the manifest.", v.rows or 0).format(
                name=name, n=count(v.rows)), icon=":material/verified:")
        else:
            st.error(_("{name} does not match its manifest: {problem} (file: {rows} rows, sha256 {sha}…; manifest: "
                       "{expected} rows, sha256 {expected_sha}…).").format(
                name=name, problem=v.problem, rows=count(v.rows), sha=v.sha256[:16], expected=count(v.expected_rows),
                expected_sha=v.expected_sha256[:16]), icon=":material/gpp_bad:")
