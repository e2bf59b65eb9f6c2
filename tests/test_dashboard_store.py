"""The Backups page with BACKUP_STORE and GDRIVE_FOLDER_ID: where each backup lives, verified state, downloads
streamed from the store, verify and restore of the stored copy, the Drive copy button, the expiry preview.

AppTest in-process; moto's server on loopback for the store, tests/support/fakedrive.py for Drive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from core import run_cleanup
from core.backup import list_backups
from core.config import Settings
from tests.support.databases import table_snapshot
from tests.support.fakedrive import FakeDrive
from tests.support.objectstore import ENV, client, moto_server, new_bucket
from tests.test_dashboard import app_env, signed_in, texts  # noqa: F401 (app_env is a fixture)

FOLDER = "shared-folder-2"


@pytest.fixture(scope="module")
def s3() -> str:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def stored(demo_settings: Settings, s3: str, monkeypatch: pytest.MonkeyPatch, no_proxy: None) -> Settings:
    for k, v in {**ENV, "AWS_ENDPOINT_URL": s3}.items():
        monkeypatch.setenv(k, v)
    return dataclasses.replace(demo_settings, backup_store=f"s3://{new_bucket(s3)}/logs")


def on_page(settings: Settings, app_env, **extra: str):  # noqa: F811
    app_env(settings, BACKUP_STORE=settings.backup_store or "", **extra)
    at = signed_in()
    at.switch_page("pages/backups.py").run()
    assert not at.exception
    return at


def test_a_stored_backup_without_local_copy_is_listed_verified_and_restored_from_the_store(
        stored: Settings, app_env) -> None:  # noqa: F811
    before = table_snapshot(stored)
    r = run_cleanup(stored, notify=False)
    assert r.backup_file is None and r.backup_url
    at = on_page(stored, app_env)
    table = at.dataframe[0].value
    assert table["where"].iloc[0] == "object store ✓"
    at.button(key="verify_backup").click().run()
    assert "(stored copy) verifies" in at.success[0].value
    at.button(key="restore_backup").click().run()
    at.button(key="confirm_restore").click().run()
    assert not at.exception
    assert f"Restored {r.rows_deleted:,} rows" in texts(at)
    assert table_snapshot(stored) == before


def test_verifying_a_stored_copy_that_was_altered_says_so(stored: Settings, s3: str, app_env) -> None:  # noqa: F811
    r = run_cleanup(stored, notify=False)
    bucket, key = r.backup_url[5:].split("/", 1)
    client(s3).put_object(Bucket=bucket, Key=key, Body=b"not the backup")
    at = on_page(stored, app_env)
    at.button(key="verify_backup").click().run()
    assert at.error and "sha256" in at.error[0].value


def test_the_download_route_streams_a_backup_from_the_store_when_no_local_copy_exists(
        stored: Settings, s3: str, app_env, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from ui import downloads

    app_env(stored, BACKUP_STORE=stored.backup_store)
    monkeypatch.setenv("LRC_DOWNLOAD_ROUTE_MOUNTED", "0")
    r = run_cleanup(stored, notify=False)
    name = r.backup_url.rsplit("/", 1)[1]
    [route] = downloads.routes()
    status, body, headers = _get(route, downloads.link(name, "backup"))
    bucket, key = r.backup_url[5:].split("/", 1)
    assert status == 200 and body == client(s3).get_object(Bucket=bucket, Key=key)["Body"].read()
    assert "presigned" not in json.dumps(headers) and headers["cache-control"] == "no-store"
    assert _get(route, downloads.link("nothere.csv.gz", "backup"))[0] == 404
    forged = downloads.link(name, "backup").replace("sig=", "sig=0")
    assert _get(route, forged)[0] == 403


def test_the_drive_button_copies_the_backup_and_the_page_shows_the_drive_location(
        demo_settings: Settings, app_env, no_proxy: None) -> None:  # noqa: F811
    with FakeDrive() as drive:
        key = drive.credentials_json()
        drive.fail_uploads = True
        s = dataclasses.replace(demo_settings, gdrive_folder_id=FOLDER, gdrive_credentials_json=key,
                                gdrive_api_endpoint=drive.url)
        r = run_cleanup(s, notify=False)
        drive.fail_uploads = False
        at = on_page(s, app_env, GDRIVE_FOLDER_ID=FOLDER, GDRIVE_CREDENTIALS_JSON=key, GDRIVE_API_ENDPOINT=drive.url)
        assert at.dataframe[0].value["where"].iloc[0] == "this server ✓"
        at.button(key="copy_to_drive").click().run()
        assert "copied to Google Drive" in at.success[0].value
        assert Path(r.backup_file).name in drive.in_folder(FOLDER)
        at.run()
        assert at.dataframe[0].value["where"].iloc[0] == "this server ✓ · Google Drive ✓"
        assert at.button(key="copy_to_drive").disabled


def test_the_page_previews_which_backups_would_expire(demo_settings: Settings, app_env) -> None:  # noqa: F811
    first = run_cleanup(demo_settings, retention_days=60, notify=False)
    run_cleanup(demo_settings, retention_days=30, notify=False)
    manifest = Path(first.backup_file.removesuffix(".csv.gz") + ".manifest.json")
    m = json.loads(manifest.read_text())
    m["created_at"] = "2000-01-01T00:00:00+00:00"
    manifest.write_text(json.dumps(m))
    at = on_page(demo_settings, app_env, BACKUP_RETENTION_DAYS="7")
    assert Path(first.backup_file).name in at.warning[0].value and "BACKUP_RETENTION_DAYS=7" in at.warning[0].value
    assert len(list_backups(demo_settings)) == 2  # a preview deletes nothing


def _get(route, url: str) -> tuple[int, bytes, dict[str, str]]:
    parts = urlsplit(url)
    scope = {"type": "http", "method": "GET", "path": parts.path, "raw_path": parts.path.encode(),
             "query_string": parts.query.encode(), "headers": [], "root_path": "", "scheme": "http",
             "server": ("testserver", 80), "client": ("127.0.0.1", 1), "http_version": "1.1"}
    sent: list[dict] = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict:
        if requests:
            return requests.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(route.handle(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], body, {k.decode(): v.decode() for k, v in sent[0]["headers"]}
