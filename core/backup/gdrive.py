"""A copy of each verified backup in a Google Drive folder (GDRIVE_FOLDER_ID), with Google's official client.

A service account has no storage quota of its own, so the folder belongs to a Shared Drive
(every call passes ``supportsAllDrives``). The key is GOOGLE_APPLICATION_CREDENTIALS (a path)
or GDRIVE_CREDENTIALS_JSON (the JSON itself); GDRIVE_API_ENDPOINT points the client at
another Drive API root (the tests' fake). Each copy is a resumable upload in chunks; the
file's ``md5Checksum`` as Drive computed it must equal the MD5 of the local bytes, and the
data file carries that MD5 and the backup's sha256 in its ``appProperties``. The manifest
goes up last, as in the object store: a Drive copy counts as verified only when both are there
and the data file's checksum is the one recorded at upload.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from ..errors import BadSetting, StorageError, describe
from .manifest import manifest_path_for

log = logging.getLogger(__name__)

SCOPES = ["https://www.googleapis.com/auth/drive"]
CHUNK = 8 * 1024 * 1024  # a multiple of 256 KiB, as Drive's resumable protocol requires
_FIELDS = "id,name,md5Checksum,size,appProperties"


class DriveError(StorageError):
    """Google Drive refused or failed a request; names the folder."""

    def __init__(self, folder: str, what: str, why: str) -> None:
        super().__init__(f"Google Drive folder {folder}: {what} failed ({why})")


def drive_configured(settings: Any) -> bool:
    return bool(getattr(settings, "gdrive_folder_id", None))


def _credentials(settings: Any) -> Any:
    from google.oauth2 import service_account

    raw, path = settings.gdrive_credentials_json, settings.google_application_credentials
    try:
        if raw:
            return service_account.Credentials.from_service_account_info(json.loads(raw), scopes=SCOPES)
        if path:
            return service_account.Credentials.from_service_account_file(path, scopes=SCOPES)
    except (OSError, ValueError, KeyError) as exc:
        env = "GDRIVE_CREDENTIALS_JSON" if raw else "GOOGLE_APPLICATION_CREDENTIALS"
        raise BadSetting(env, "(a service-account key)" if raw else path,
                         f"is not a usable key ({describe(exc)})") from None
    raise BadSetting("GDRIVE_FOLDER_ID", settings.gdrive_folder_id,
                     "needs GOOGLE_APPLICATION_CREDENTIALS or GDRIVE_CREDENTIALS_JSON (a service-account key)")


class Drive:
    """The folder and a Drive v3 service built from the bundled discovery document (no network to build)."""

    def __init__(self, settings: Any) -> None:
        from googleapiclient.discovery import build_from_document
        from googleapiclient.discovery_cache import get_static_doc

        self.folder = settings.gdrive_folder_id
        root = settings.gdrive_api_endpoint.rstrip("/") + "/"
        # The bundled Drive v3 document with its root moved: api_endpoint alone keeps the upload URL's https scheme.
        doc = json.loads(get_static_doc("drive", "v3"))
        doc["rootUrl"], doc["baseUrl"] = root, urljoin(root, doc["servicePath"])
        with self._call("connecting"):
            self.service = build_from_document(doc, credentials=_credentials(settings),
                                               client_options={"api_endpoint": doc["baseUrl"]})

    @classmethod
    def from_settings(cls, settings: Any) -> Drive | None:
        return cls(settings) if drive_configured(settings) else None

    @contextmanager
    def _call(self, what: str) -> Iterator[None]:
        from google.auth.exceptions import GoogleAuthError
        from googleapiclient.errors import Error as ClientError

        try:
            yield
        except (ClientError, GoogleAuthError, OSError, ValueError) as exc:
            raise DriveError(self.folder, what, describe(exc)) from None

    def files(self) -> dict[str, dict[str, Any]]:
        """name -> metadata of the files in the folder (not trashed)."""
        out: dict[str, dict[str, Any]] = {}
        token = None
        with self._call("listing the folder"):
            while True:
                r = self.service.files().list(
                    q=f"'{self.folder}' in parents and trashed = false", pageSize=1000, pageToken=token,
                    fields=f"nextPageToken,files({_FIELDS})", supportsAllDrives=True,
                    includeItemsFromAllDrives=True).execute()
                out.update({f["name"]: f for f in r.get("files", [])})
                token = r.get("nextPageToken")
                if not token:
                    return out

    def upload(self, name: str, source: Path, properties: dict[str, str] | None = None) -> dict[str, Any]:
        """Resumable upload of a local file into the folder; Drive's md5Checksum must be the file's MD5."""
        from googleapiclient.http import MediaFileUpload

        md5 = _md5(source)
        body = {"name": name, "parents": [self.folder], "appProperties": {**(properties or {}), "md5": md5}}
        with self._call(f"uploading {name}"):
            media = MediaFileUpload(str(source), mimetype="application/octet-stream", chunksize=CHUNK, resumable=True)
            request = self.service.files().create(body=body, media_body=media, fields=_FIELDS,
                                                  supportsAllDrives=True)
            done = None
            while done is None:
                _, done = request.next_chunk(num_retries=3)
        if done.get("md5Checksum") != md5:
            self.delete(done["id"])
            raise DriveError(self.folder, f"uploading {name}",
                             f"Drive's md5Checksum {done.get('md5Checksum')} is not the file's {md5}")
        return done

    def delete(self, file_id: str) -> None:
        from googleapiclient.errors import HttpError

        with self._call(f"deleting file {file_id}"):
            try:
                self.service.files().delete(fileId=file_id, supportsAllDrives=True).execute()
            except HttpError as exc:
                if exc.resp.status != 404:
                    raise


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            h.update(piece)
    return h.hexdigest()


def drive_location(files: dict[str, dict[str, Any]], name: str, sha256: str) -> dict[str, Any] | None:
    """The backup's Drive location from the folder's listing, or None when it has no copy there."""
    f = files.get(name)
    if f is None:
        return None
    props = f.get("appProperties") or {}
    verified = (props.get("md5") == f.get("md5Checksum") and props.get("sha256") == sha256
                and manifest_path_for(Path(name)).name in files)
    return {"kind": "drive", "where": f["id"], "verified": verified}


def merge_drive(settings: Any, backups: list[Any]) -> list[Any]:
    """Add each backup's Drive location (one listing of the folder); Drive unreachable: logged, listed without."""
    import dataclasses

    if not drive_configured(settings):
        return backups
    try:
        files = Drive(settings).files()
    except (DriveError, BadSetting) as exc:
        log.warning("cannot list the Google Drive copies: %s", exc.one_line())
        return backups
    out = []
    for b in backups:
        here = None if b.error else drive_location(files, b.name, b.sha256)
        out.append(dataclasses.replace(b, locations=(*b.locations, here)) if here else b)
    return out


def remove_copy(drive: Drive, name: str) -> None:
    """Delete a backup's Drive copy, its manifest first (a half-removed copy never looks verified)."""
    files = drive.files()
    for n in (manifest_path_for(Path(name)).name, name):
        if n in files:
            drive.delete(files[n]["id"])
