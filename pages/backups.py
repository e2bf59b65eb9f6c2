"""Backups: every backup file; download (exact or spreadsheet-safe), verify, restore after a confirmation."""

from functools import partial
from pathlib import Path

import pandas as pd
import streamlit as st

from core import RetentionError, Settings, restore_backup, verify_backup
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
        r = restore_backup(settings, name)
        st.session_state[RESTORE_DONE] = (
            "success", f"Restored {count(r.rows_restored)} rows of {Path(name).name} into {r.table}; "
            f"{count(r.rows_skipped)} were already present and skipped ({human_duration(r.duration_s)}).")
    except RetentionError as exc:
        st.session_state[RESTORE_DONE] = ("error", f"Restore refused, the table is unchanged: {exc.one_line()}")
    clear_caches()


@st.dialog("Restore backup", width="medium")
def restore_dialog(settings: Settings, b: BackupInfo) -> None:
    if not st.session_state.get(RESTORE):
        st.rerun()
    st.markdown(f"Put the **{count(b.rows)} rows** of `{b.name}` back in **{settings.table}**. "
                "The backup is verified first; rows whose primary key is already in the table are skipped. "
                "All or nothing: on any error the table is unchanged.")
    left, right = st.columns(2)
    left.button(f"Restore {count(b.rows)} rows", type="primary", key="confirm_restore",
                on_click=_confirm_restore, args=(settings,), width="stretch")
    right.button("Cancel", key="cancel_restore", on_click=lambda: st.session_state.pop(RESTORE, None),
                 width="stretch")


_KINDS = {"local": "this server", "store": "object store", "drive": "Google Drive"}


def where_text(b: BackupInfo) -> str:
    """Each location and whether it is verified: "this server ✓ · object store ✓ · Google Drive ✗"."""
    return " · ".join(f"{_KINDS.get(loc['kind'], loc['kind'])} {'✓' if loc['verified'] else '✗ unverified'}"
                      for loc in b.locations) or "—"


def has(b: BackupInfo, kind: str) -> bool:
    return any(loc["kind"] == kind for loc in b.locations)


def _verify(settings: Settings, b: BackupInfo) -> None:
    """Verify the local copy, or, without one, the stored copy (streamed and hashed against its manifest)."""
    from core.backup.stored import stored_backup, verify_stored

    try:
        with st.spinner(f"Reading {b.name}…"):
            if has(b, "local"):
                v = verify_backup(settings, b.name)
                ok, rows, sha, problem = v.ok, v.rows, v.sha256, v.problem
            else:
                scan = verify_stored(stored_backup(settings, b.name), b.name)
                ok, rows, sha, problem = True, b.rows, scan.sha256, None
    except RetentionError as exc:
        st.error(exc.one_line(), icon=":material/error:")
        return
    where = "" if has(b, "local") else " (stored copy)"
    if ok:
        st.success(f"{b.name}{where} verifies: {count(rows)} rows, SHA-256 matches the manifest.",
                   icon=":material/verified:")
    else:
        st.error(f"{b.name}{where} does not match its manifest: {problem} (sha256 {sha[:16]}…).",
                 icon=":material/gpp_bad:")


def _copy_to_drive(settings: Settings, name: str) -> None:
    from core.backup.drivecopy import copy_missing

    with st.spinner(f"Copying {name} to Google Drive…"):
        report = copy_missing(settings, names=(name,))
    for n, fid in report.copied:
        st.success(f"{n} copied to Google Drive (file {fid}); MD5 checked.", icon=":material/cloud_done:")
    for n, why in report.failed:
        st.error(f"Google Drive copy of {n} failed: {why}", icon=":material/cloud_off:")
    if not report.copied and not report.failed:
        st.info(f"{name} already has a verified Google Drive copy.")
    clear_caches()


def _expiry_preview(settings: Settings) -> None:
    from core.backup.expiry import due
    from core.storeconf import backup_retention_days

    days = backup_retention_days(settings)
    if days is None:
        st.caption("BACKUP_RETENTION_DAYS is unset: backups are kept forever.")
        return
    try:
        old, kept = due(settings)
    except RetentionError as exc:
        st.error(exc.one_line())
        return
    if not old:
        st.caption(f"BACKUP_RETENTION_DAYS={days}: no backup is due to expire.")
    else:
        st.warning(f"BACKUP_RETENTION_DAYS={days}: the next run (or `expire-backups`) deletes "
                   + ", ".join(f"`{b.name}`" for b in old) + " from every location.", icon=":material/auto_delete:")
    if kept:
        st.caption("Kept although older: " + ", ".join(f"`{n}`" for n in kept) + " (the newest of its table).")


settings = settings_or_stop()
st.title("Backups")
st.caption(f"Backups in `{settings.backup_dir}`" + (f" and `{settings.backup_store}`" if settings.backup_store else "")
           + ", newest first. Each one is a gzip-compressed CSV with a manifest "
           "(row count, SHA-256) beside it.")

outcome = st.session_state.pop(RESTORE_DONE, None)
if outcome:
    (st.success if outcome[0] == "success" else st.error)(outcome[1])

try:
    backups = cached_backups(settings)
except (RetentionError, OSError) as exc:
    st.error(exc.one_line() if isinstance(exc, RetentionError) else f"Cannot list {settings.backup_dir}: {exc}")
    st.stop()
if not backups:
    st.info("No backups yet: a cleanup that archives rows writes one here.", icon=":material/inventory_2:")
    st.stop()

table = pd.DataFrame(
    {
        "file": [Path(b.file).name for b in backups],
        "rows": [b.rows for b in backups],
        "cutoff": [timestamp(b.cutoff, seconds=False) for b in backups],
        "created": [timestamp(b.created_at, seconds=False) for b in backups],
        "size": [human_bytes(b.size_bytes) for b in backups],
        "sha256": [b.sha256 for b in backups],
        "oldest row": [timestamp(b.min_timestamp, seconds=False) for b in backups],
        "newest row": [timestamp(b.max_timestamp, seconds=False) for b in backups],
        "where": [where_text(b) for b in backups],
        **({"error": [b.error or "" for b in backups]} if any(b.error for b in backups) else {}),
    }
)
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"rows": st.column_config.NumberColumn(format="localized"),
                            "sha256": st.column_config.TextColumn(width="medium")})

names = [b.name for b in backups]
name = st.selectbox("Backup", names, key="backup_name")
b = backups[names.index(name)]
st.caption(f"{count(b.rows)} rows · created {timestamp(b.created_at, seconds=False)} · cutoff {timestamp(b.cutoff, seconds=False)} · "
           f"run {b.run_id or '—'} · {where_text(b)}")
local = has(b, "local")

c1, c2, c3, c4, c5 = st.columns(5)
if downloads.streamed_available():
    c1.link_button("Download backup", downloads.link(name, "backup"), icon=":material/download:", width="stretch")
    if local:
        c2.link_button("Download for spreadsheets", downloads.link(name, "spreadsheet"), icon=":material/table:",
                       width="stretch")
else:
    c1.download_button("Download backup", partial(downloads.read_backup, settings, name), file_name=name,
                       mime="application/gzip", key="download_backup", icon=":material/download:",
                       on_click="ignore", width="stretch")
    if local:
        c2.download_button("Download for spreadsheets", partial(downloads.read_spreadsheet, settings, name),
                           file_name=downloads.spreadsheet_name(name), mime="text/csv", key="download_spreadsheet",
                           icon=":material/table:", on_click="ignore", width="stretch")
verify = c3.button("Verify" if local else "Verify stored copy", key="verify_backup", icon=":material/verified:",
                   width="stretch")
if c4.button("Restore…", key="restore_backup", icon=":material/settings_backup_restore:", width="stretch"):
    st.session_state[RESTORE] = name if local else b.file  # a stored backup restores by its s3:// URL
    restore_dialog(settings, b)
drive_copy = settings.gdrive_folder_id and c5.button(
    "Copy to Google Drive", key="copy_to_drive", icon=":material/add_to_drive:", width="stretch",
    disabled=any(loc["kind"] == "drive" and loc["verified"] for loc in b.locations))
st.caption("The spreadsheet-safe copy is plain CSV with cells starting with = + - @, tab or CR prefixed by an "
           "apostrophe, so Excel does not run them as formulas. The backup file itself is never changed."
           + ("" if local else " Without a local copy the backup streams from the object store through this "
              "server; restore fetches and verifies it first."))

if verify:
    _verify(settings, b)
if drive_copy:
    _copy_to_drive(settings, name)
_expiry_preview(settings)
