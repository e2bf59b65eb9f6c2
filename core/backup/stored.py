"""Finishing a backup into the object store: final object, verified, manifest last, segments removed.

Wraps :func:`core.backup.finish.finish_backup` (the local finish) for runs with a
``BACKUP_STORE``. Idempotent, like the local finish, and it resumes from whatever is
left, the local disk included or not:

- the stored manifest exists: the backup is final in the store; it is verified (streamed
  back against the manifest's sha256) and only leftovers are cleaned up;
- the local file is gone (the host's disk was wiped): it is rebuilt from the run's batch
  objects, exactly the committed ones (their sizes must add up to the journal's length),
  then finished like any other;
- then the final object is uploaded, streamed back and its sha256 compared, the manifest
  written, the batch objects deleted, and the local copy removed unless BACKUP_KEEP_LOCAL.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackupMismatch
from ..i18n import N_
from ..storeconf import keep_local
from .finish import finish_backup
from .manifest import manifest_path_for
from .s3 import S3Store, SegmentUploader, segment_name
from .scan import Scan
from .writer import fsync_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finished:
    """Where a finished backup lives: local files (None when not kept), its stored URL (None without a store)."""

    data: Path | None
    manifest: Path | None
    scan: Scan
    url: str | None


@dataclass(frozen=True)
class FinishRequest:
    """What :func:`finish_anywhere` finishes: the run's names, its journal, what the writer verified."""

    partial: Path
    final: Path
    committed_bytes: int
    rows: int
    manifest_fields: dict[str, Any]
    sha256: str | None = None
    known: Scan | None = None
    uploaded: SegmentUploader | None = None  # the run's own uploader (its writer closed), None in recovery


def finish_anywhere(settings: Any, req: FinishRequest) -> Finished:
    """Finish the backup locally and, with a store, in the store. Raises BackupMismatch, StoreError, OSError."""
    store = S3Store.from_settings(settings)
    if store is None:
        data, manifest, scan = _local(settings, req)
        return Finished(data, manifest, scan, None)
    try:
        return _finish_stored(settings, store, req)
    finally:
        if req.uploaded is not None:
            req.uploaded.discard()  # its multipart upload, unless compose completed it: none is left open


def _finish_stored(settings: Any, store: S3Store, req: FinishRequest) -> Finished:
    name, mname = req.final.name, manifest_path_for(req.final).name
    store.abort_open_uploads(name, keep=req.uploaded.upload if req.uploaded else None)  # left by a killed run
    if store.exists(mname):
        scan = verify_stored(store, name)
        return _tidy(settings, store, req, scan)
    if not req.partial.exists() and not req.final.exists():
        rebuild_from_segments(store, name, req.partial, req.committed_bytes)
    data, manifest, scan = _local(settings, req)
    if not store.compose(name, data, req.uploaded):  # from the batch objects, checked part by part; else uploaded and read back
        store.upload_file(name, data)
        sha, size = store.sha256_of(name)
        if (sha, size) != (scan.sha256, scan.size_bytes):
            raise BackupMismatch(store.url(name), "stored sha256", scan.sha256, sha)
    store.put_bytes(mname, manifest.read_bytes())  # last: the manifest makes the stored backup final
    log.info("backup %s stored and verified as %s", name, store.url(name))
    return _tidy(settings, store, req, scan)


def _local(settings: Any, req: FinishRequest) -> tuple[Path, Path, Scan]:
    return finish_backup(partial=req.partial, final=req.final, committed_bytes=req.committed_bytes, rows=req.rows,
                         sha256=req.sha256, known=req.known, manifest_fields=req.manifest_fields,
                         signing_key=settings.backup_signing_key)


def _tidy(settings: Any, store: S3Store, req: FinishRequest, scan: Scan) -> Finished:
    """The stored backup is final: drop its batch objects and, unless kept, the local copy."""
    store.delete_segments(req.final.name)
    manifest = manifest_path_for(req.final)
    if keep_local(settings) and req.final.exists() and manifest.exists():
        return Finished(req.final, manifest, scan, store.url(req.final.name))
    for p in (req.final, req.partial, manifest):
        p.unlink(missing_ok=True)
    if req.final.parent.is_dir():
        fsync_dir(req.final.parent)
    return Finished(None, None, scan, store.url(req.final.name))


def verify_stored(store: S3Store, name: str) -> Scan:
    """Stream a stored backup back and compare it with its stored manifest. Raises BackupMismatch, StoreError."""
    mname = manifest_path_for(Path(name)).name
    try:
        m = json.loads(store.read_bytes(mname))
    except ValueError as exc:
        raise BackupMismatch(store.url(mname), "the manifest", "valid JSON", str(exc)) from None
    sha, size = store.sha256_of(name)
    if sha != m.get("sha256"):
        raise BackupMismatch(store.url(name), "sha256", m.get("sha256"), sha)
    return Scan(sha, int(m.get("rows") or 0), size, True)


def rebuild_from_segments(store: S3Store, name: str, partial: Path, committed_bytes: int) -> None:
    """Write the partial file again from the batch objects of the committed batches, in order.

    The batches that committed are exactly the first ones whose sizes add up to the
    journal's ``committed_bytes``; an object beyond (a batch that did not commit) is not
    used. Raises BackupMismatch when the objects cannot make up that length.
    """
    total, use = 0, 0
    for expected, (seq, size) in enumerate(store.segments(name), start=1):
        if seq != expected or total >= committed_bytes:
            break
        total += size
        use = seq
    if total != committed_bytes:
        raise BackupMismatch(store.url(name + ".parts/"), "length of the committed batches", committed_bytes, total)
    log.warning("rebuilding %s from %d stored batch objects (the local copy is gone)", partial.name, use)
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "xb") as f:
        for seq in range(1, use + 1):
            for piece in store.stream(segment_name(name, seq)):
                f.write(piece)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(partial.parent)


def forget_unfinished(settings: Any, final: Path | None) -> None:
    """A run that deleted nothing: remove whatever it stored (batch objects of batches that never committed)."""
    store = S3Store.from_settings(settings)
    if store is not None and final is not None:
        store.abort_open_uploads(final.name)
        store.delete_segments(final.name)


def prepare_store(settings: Any) -> S3Store | None:
    """The configured store, proven usable (probe written, read, removed). Raises BadSetting naming it."""
    store = S3Store.from_settings(settings)
    if store is not None:
        store.probe()
    return store


class StoreProbe:
    """:func:`prepare_store` in a background thread, so that it overlaps the database's planning."""

    def __init__(self, future: Any | None) -> None:
        self._future = future

    @classmethod
    def start(cls, settings: Any) -> StoreProbe:
        """Start probing the configured store (nothing without BACKUP_STORE)."""
        if not getattr(settings, "backup_store", None):
            return cls(None)
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(1, thread_name_prefix="store-probe")
        try:
            return cls(pool.submit(prepare_store, settings))
        finally:
            pool.shutdown(wait=False)

    def wait(self) -> None:
        """Wait for the probe. Raises BadSetting (BACKUP_STORE) naming the store when it is not usable."""
        if self._future is not None:
            self._future.result()

    def settle(self) -> None:
        """Wait for the probe, ignoring its outcome (a plan that failed first: the probe removes its object)."""
        if self._future is not None:
            self._future.exception()


def attach_segments(settings: Any, writer: Any, final: Path) -> SegmentUploader | None:
    """With a store, make each of the writer's committed members go up as its batch's object first.

    Returns the uploader (for :class:`FinishRequest`), None without a store.
    """
    store = S3Store.from_settings(settings)
    if store is None:
        return None
    uploader = SegmentUploader(store, final.name)
    writer.on_member = uploader
    return uploader


def merge_stored(settings: Any, local: list[Any]) -> list[Any]:
    """Backups listed in BACKUP_DIR plus those in the store, each once, with all its locations.

    A stored location is ``verified`` when both its objects are there: the manifest is written
    only after the data object was streamed back against its sha256.
    """
    import dataclasses

    from ..timefmt import parse_db_timestamp
    from .manifest import MANIFEST_SUFFIX, data_name_for

    store = S3Store.from_settings(settings)
    if store is None:
        return local
    by_name = {b.name: b for b in local}
    names = set(store.list())
    for mname in [n for n in names if n.endswith(MANIFEST_SUFFIX)]:
        name = data_name_for(mname)
        if name not in names:
            continue
        try:
            m = json.loads(store.read_bytes(mname))
        except ValueError as exc:
            log.warning("skipping %s: %s", store.url(mname), exc)
            continue
        here = {"kind": "store", "where": store.url(name), "verified": True}
        if name in by_name:
            b = by_name[name]
            by_name[name] = dataclasses.replace(b, locations=(*b.locations, here))
            continue
        by_name[name] = _stored_info(store, name, m, here, parse_db_timestamp)
    return list(by_name.values())


def _stored_info(store: S3Store, name: str, m: dict[str, Any], here: dict[str, Any], ts: Any) -> Any:
    from ..models import BackupInfo

    return BackupInfo(
        file=store.url(name), manifest_file=store.url(manifest_path_for(Path(name)).name), table=str(m.get("table")),
        rows=int(m.get("rows") or 0), cutoff=ts(m.get("cutoff")), created_at=ts(m.get("created_at")),
        size_bytes=int(m.get("size_bytes") or 0), sha256=str(m.get("sha256")), run_id=m.get("run_id"), source=m.get("source"),
        min_timestamp=ts(m.get("min_timestamp")), max_timestamp=ts(m.get("max_timestamp")), locations=(here,))


def fetch_stored(settings: Any, url: str) -> Path:
    """Copy a stored backup and its manifest into BACKUP_DIR under a fetch name; the data path.

    The copy is checked against the stored manifest's sha256 afterwards by whoever uses it
    (verify, restore). Raises BackupNotFound (not this store's, or no such backup), StoreError.
    """
    from ..errors import BackupNotFound
    from .store import LocalFolderStore

    store = S3Store.from_settings(settings)
    name = store.name_of(url) if store else None
    if store is None or not name or not name.endswith(".csv.gz"):
        raise BackupNotFound(url, N_("is not a backup in BACKUP_STORE ({store})"), store=store.base if store else "-")
    mname = manifest_path_for(Path(name)).name
    if not store.exists(mname):
        raise BackupNotFound(url, N_("has no manifest in the store (not a finished backup)"))
    local = LocalFolderStore.prepare(settings.backup_dir)
    stem = f"fetched-{uuid.uuid4().hex[:8]}-"
    data, manifest = local.path(stem + name), local.path(stem + mname)
    store.download(name, data)
    manifest.write_bytes(store.read_bytes(mname))
    return data


def stored_backup(settings: Any, name: str) -> S3Store:
    """The store holding the finished backup ``name`` (a plain name with its manifest there). Raises BackupNotFound."""
    from ..errors import BackupNotFound

    store = S3Store.from_settings(settings)
    if store is None or "/" in name or not name.endswith(".csv.gz"):
        raise BackupNotFound(name, N_("is not a backup in BACKUP_STORE ({store})"), store=store.base if store else "-")
    if not store.exists(manifest_path_for(Path(name)).name):
        raise BackupNotFound(name, N_("is not a finished backup in {store}"), store=store.base)
    return store
