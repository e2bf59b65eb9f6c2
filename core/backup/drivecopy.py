"""Copying verified backups to Google Drive: after each run, and on demand (the Backups page's button).

Every backup listed without a verified Drive copy is copied: from its local file, or,
when no local copy is kept, fetched from the object store first. The bytes must hash to the
manifest's sha256 before they go up (only a verified backup is copied). A copy that fails
never fails the cleanup: it is noted on the backup's run in the history, named in the
run's Slack report, and tried again by the next run.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import history
from ..errors import RetentionError, map_exceptions
from .gdrive import Drive, DriveError, drive_configured
from .manifest import manifest_path_for
from .s3 import S3Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriveReport:
    """What a round of copies did: (backup name, Drive file id) copied, (backup name, why) failed."""

    copied: tuple[tuple[str, str], ...] = ()
    failed: tuple[tuple[str, str], ...] = ()

    def notes(self) -> tuple[str, ...]:
        out = [f"copied to Google Drive: {name} (file {fid})" for name, fid in self.copied]
        out += [f"Google Drive copy of {name} failed: {why}; the next run tries again" for name, why in self.failed]
        return tuple(out)


def copy_missing(settings: Any, *, names: tuple[str, ...] | None = None) -> DriveReport:
    """Copy every listed backup (or those ``names``) lacking a verified Drive copy. Never raises RetentionError."""
    from .catalog import list_backups

    if not drive_configured(settings):
        return DriveReport()
    try:
        with map_exceptions():
            drive = Drive(settings)
            backups = [b for b in list_backups(settings) if not b.error and (names is None or b.name in names)]
    except RetentionError as exc:
        log.error("Google Drive copies skipped: %s", exc.one_line())
        return DriveReport(failed=tuple((n, exc.one_line()) for n in names or ("(all backups)",)))
    copied, failed = [], []
    for b in backups:
        if any(loc["kind"] == "drive" and loc["verified"] for loc in b.locations):
            continue
        try:
            with map_exceptions():
                fid = copy_backup(settings, drive, b)
            copied.append((b.name, fid))
            _note(settings, b.run_id, f"copied to Google Drive (file {fid}, md5 checked)")
        except RetentionError as exc:
            log.error("Google Drive copy of %s failed: %s", b.name, exc.one_line())
            failed.append((b.name, exc.one_line()))
            _note(settings, b.run_id, f"Google Drive copy failed: {exc.one_line()}")
    return DriveReport(tuple(copied), tuple(failed))


def copy_backup(settings: Any, drive: Drive, b: Any) -> str:
    """Copy one backup and then its manifest into the folder (an unverified copy there is replaced); the file id."""
    from .gdrive import remove_copy

    with tempfile.TemporaryDirectory(prefix=".drive-", dir=_scratch(settings)) as tmp:
        data, manifest = _sources(settings, b, Path(tmp))
        sha = _sha256(data)
        if sha != b.sha256:
            raise DriveError(drive.folder, f"copying {b.name}", f"its bytes hash to {sha}, the manifest says {b.sha256}")
        remove_copy(drive, b.name)
        done = drive.upload(b.name, data, {"sha256": b.sha256})
        drive.upload(manifest_path_for(Path(b.name)).name, manifest)  # last: makes the Drive copy verified
    log.info("backup %s copied to Google Drive as file %s (md5 %s)", b.name, done["id"], done["md5Checksum"])
    return str(done["id"])


def _scratch(settings: Any) -> str:
    from .store import LocalFolderStore

    return str(LocalFolderStore.prepare(settings.backup_dir).root)


def _sources(settings: Any, b: Any, tmp: Path) -> tuple[Path, Path]:
    """Local paths of the backup's data and manifest: its local copy, or fetched from the store."""
    local = next((Path(loc["where"]) for loc in b.locations if loc["kind"] == "local"), None)
    if local is not None and local.is_file() and manifest_path_for(local).is_file():
        return local, manifest_path_for(local)
    store = S3Store.from_settings(settings)
    if store is None or not any(loc["kind"] == "store" for loc in b.locations):
        raise DriveError(str(settings.gdrive_folder_id), f"copying {b.name}", "no local or stored copy to read")
    data, manifest = tmp / b.name, tmp / manifest_path_for(Path(b.name)).name
    store.download(b.name, data)
    manifest.write_bytes(store.read_bytes(manifest.name))
    return data, manifest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            h.update(piece)
    return h.hexdigest()


def _note(settings: Any, run_id: str | None, text: str) -> None:
    """Append a line to the notes of the run that wrote the backup (its per-backup record); logged on failure."""
    if not run_id:
        return
    from ..db import check_connection

    try:
        with map_exceptions():
            engine = check_connection(settings)
            schema = settings.table_parts[0]
            row = history.get_run(engine, schema, run_id)
            if row is not None:
                notes = "\n".join(x for x in (row.get("notes"), text) if x)
                history.update_run(engine, schema, run_id, notes=notes)
    except RetentionError as exc:
        log.warning("could not note %r on run %s: %s", text, run_id, exc.one_line())
