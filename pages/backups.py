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
            error=exc.localized()))
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


def _kinds() -> dict[str, str]:
    return {"local": _("this server"), "store": _("object store"), "drive": "Google Drive"}


def where_text(b: BackupInfo) -> str:
    """Each location and whether it is verified: "this server ✓ · object store ✓ · Google Drive ✗"."""
    kinds = _kinds()
    return " · ".join(f"{kinds.get(loc['kind'], loc['kind'])} {'✓' if loc['verified'] else _('✗ unverified')}"
                      for loc in b.locations) or "—"


def has(b: BackupInfo, kind: str) -> bool:
    return any(loc["kind"] == kind for loc in b.locations)


def _verify(settings: Settings, b: BackupInfo) -> None:
    """Verify the local copy, or, without one, the stored copy (streamed and hashed against its manifest)."""
    from core.backup.stored import stored_backup, verify_stored

    try:
        with st.spinner(_("Reading {name}…").format(name=b.name)):
            if has(b, "local"):
                v = verify_backup(settings, b.name)
                ok, rows, sha, problem = v.ok, v.rows, v.sha256, v.problem
            else:
                scan = verify_stored(stored_backup(settings, b.name), b.name)
                ok, rows, sha, problem = True, b.rows, scan.sha256, None
    except RetentionError as exc:
        st.error(exc.localized(), icon=":material/error:")
        return
    where = "" if has(b, "local") else " " + _("(stored copy)")
    if ok:
        st.success(ngettext("{name} verifies: {n} row, SHA-256 matches the manifest.",
                            "{name} verifies: {n} rows, SHA-256 matches the manifest.", rows or 0).format(
            name=b.name + where, n=count(rows)), icon=":material/verified:")
    else:
        st.error(_("{name} does not match its manifest: {problem} (sha256 {sha}…).").format(
            name=b.name + where, problem=problem, sha=sha[:16]), icon=":material/gpp_bad:")


def _copy_to_drive(settings: Settings, name: str) -> None:
    from core.backup.drivecopy import copy_missing

    with st.spinner(_("Copying {name} to Google Drive…").format(name=name)):
        report = copy_missing(settings, names=(name,))
    for n, fid in report.copied:
        st.success(_("{name} copied to Google Drive (file {id}); MD5 checked.").format(name=n, id=fid),
                   icon=":material/cloud_done:")
    for n, why in report.failed:
        st.error(_("Google Drive copy of {name} failed: {why}").format(name=n, why=why), icon=":material/cloud_off:")
    if not report.copied and not report.failed:
        st.info(_("{name} already has a verified Google Drive copy.").format(name=name))
    clear_caches()


def _expiry_preview(settings: Settings) -> None:
    from core.backup.expiry import due
    from core.storeconf import backup_retention_days

    days = backup_retention_days(settings)
    if days is None:
        st.caption(_("BACKUP_RETENTION_DAYS is unset: backups are kept forever"))
        return
    try:
        old, kept = due(settings)
    except RetentionError as exc:
        st.error(exc.localized())
        return
    if not old:
        st.caption(_("BACKUP_RETENTION_DAYS={days}: no backup is due to expire.").format(days=days))
    else:
        st.warning(_("BACKUP_RETENTION_DAYS={days}: the next run (or `expire-backups`) deletes {names} from every "
                     "location.").format(days=days, names=", ".join(f"`{b.name}`" for b in old)),
                   icon=":material/auto_delete:")
    if kept:
        st.caption(_("Kept although older: {names} (the newest of its table).").format(
            names=", ".join(f"`{n}`" for n in kept)))


settings = settings_or_stop()
st.title(_("Backups"))
st.caption(_("Files in `{dir}`, newest first. Each one is a gzip-compressed CSV with a manifest (row count, SHA-256) "
             "beside it.").format(dir=settings.backup_dir))
if settings.backup_store:
    st.caption(_("Stored copies: `{store}`.").format(store=settings.backup_store))

outcome = st.session_state.pop(RESTORE_DONE, None)
if outcome:
    (st.success if outcome[0] == "success" else st.error)(outcome[1])

try:
    backups = cached_backups(settings)
except (RetentionError, OSError) as exc:
    st.error(exc.localized() if isinstance(exc, RetentionError)
             else _("Cannot list {dir}: {error}").format(dir=settings.backup_dir, error=exc))
    st.stop()
if not backups:
    st.info(_("No backups yet: a cleanup that archives rows writes one here."), icon=":material/inventory_2:")
    st.stop()
try:
    here = current_source(settings)
except RetentionError as exc:
    st.error(exc.localized(), icon=":material/error:")
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
        _("where"): [where_text(b) for b in backups],
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
    created=timestamp(b.created_at, seconds=False), cutoff=timestamp(b.cutoff, seconds=False), run=b.run_id or "—")
    + " · " + where_text(b))
local = has(b, "local")

row = st.container(horizontal=True)  # each button as wide as its label: none is cut
if downloads.streamed_available():
    row.link_button(_("Download backup"), downloads.link(name, "backup"), icon=":material/download:", width="content")
    if local:
        row.link_button(_("Download for spreadsheets"), downloads.link(name, "spreadsheet"), icon=":material/table:",
                        width="content")
else:
    row.download_button(_("Download backup"), partial(downloads.read_backup, settings, name), file_name=name,
                        mime="application/gzip", key="download_backup", icon=":material/download:",
                        on_click="ignore", width="content")
    if local:
        row.download_button(_("Download for spreadsheets"), partial(downloads.read_spreadsheet, settings, name),
                            file_name=downloads.spreadsheet_name(name), mime="text/csv", key="download_spreadsheet",
                            icon=":material/table:", on_click="ignore", width="content")
verify = row.button(_("Verify") if local else _("Verify stored copy"), key="verify_backup", icon=":material/verified:",
                    width="content")
if row.button(_("Restore…"), key="restore_backup", icon=":material/settings_backup_restore:", width="content"):
    st.session_state[RESTORE] = name if local else b.file  # a stored backup restores by its s3:// URL
    restore_dialog(settings, b)
drive_copy = settings.gdrive_folder_id and row.button(
    _("Copy to Google Drive"), key="copy_to_drive", icon=":material/add_to_drive:", width="content",
    disabled=any(loc["kind"] == "drive" and loc["verified"] for loc in b.locations))
st.caption(_("The spreadsheet-safe copy is plain CSV with cells starting with = + - @, tab or CR prefixed by an "
             "apostrophe, so Excel does not run them as formulas. The backup file itself is never changed.")
           + ("" if local else " " + _("Without a local copy the backup streams from the object store through this "
                                       "server; restore fetches and verifies it first.")))

if verify:
    _verify(settings, b)
if drive_copy:
    _copy_to_drive(settings, name)
_expiry_preview(settings)
