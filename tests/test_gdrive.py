"""GDRIVE_FOLDER_ID: each verified backup and its manifest copied to Google Drive with the official client.

The client (google-api-python-client, google-auth) talks to tests/support/fakedrive.py over HTTP:
a real RS256-signed service-account JWT for the token, resumable chunked uploads, files.list
and files.delete.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import json
from pathlib import Path

import pytest

from core import get_run_result, run_cleanup
from core.backup import gdrive as gdrive_module
from core.backup import list_backups
from core.backup.drivecopy import copy_missing
from core.backup.expiry import expire_backups
from core.config import Settings
from tests.fakeslack import TOKEN, FakeSlack
from tests.support.fakedrive import FakeDrive
from tests.support.objectstore import ENV, moto_server, new_bucket
from tests.support.processes import run_cli

FOLDER = "shared-folder-1"


@pytest.fixture
def drive(no_proxy: None) -> FakeDrive:
    with FakeDrive() as fake:
        yield fake


@pytest.fixture
def with_drive(demo_settings: Settings, drive: FakeDrive) -> Settings:
    return dataclasses.replace(demo_settings, gdrive_folder_id=FOLDER, gdrive_credentials_json=drive.credentials_json(),
                               gdrive_api_endpoint=drive.url)


def _drive_location(s: Settings, name: str) -> dict:
    [b] = [b for b in list_backups(s) if b.name == name]
    return next(loc for loc in b.locations if loc["kind"] == "drive")


def test_a_run_copies_its_backup_and_manifest_to_the_drive_folder_md5_checked(
        with_drive: Settings, drive: FakeDrive, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gdrive_module, "CHUNK", 256 * 1024)  # several chunks: 308 answers, then the file
    r = run_cleanup(with_drive, notify=False)
    assert r.status == "success" and r.rows_deleted > 0
    name = Path(r.backup_file).name
    files = drive.in_folder(FOLDER)
    assert set(files) == {name, name.removesuffix(".csv.gz") + ".manifest.json"}
    assert files[name]["data"] == Path(r.backup_file).read_bytes()
    assert len(list(csv.reader(io.StringIO(gzip.decompress(files[name]["data"]).decode())))) == r.rows_deleted + 1
    assert sum(1 for m, p in drive.requests if m == "PUT") >= 2  # chunked, resumable
    loc = _drive_location(with_drive, name)
    assert loc == {"kind": "drive", "where": files[name]["id"], "verified": True}
    assert any("copied to Google Drive" in n for n in r.notes)
    assert any(files[name]["id"] in n for n in get_run_result(with_drive, r.run_id).notes)


def test_a_failed_drive_copy_never_fails_the_run_is_noted_and_the_next_run_copies_it(
        with_drive: Settings, drive: FakeDrive) -> None:
    drive.fail_uploads = True
    r = run_cleanup(with_drive, retention_days=60, notify=False)
    assert r.status == "success" and r.rows_deleted > 0
    assert drive.in_folder(FOLDER) == {}
    assert any("Google Drive copy of" in n and "failed" in n for n in r.notes)
    assert any("Google Drive copy" in n and "failed" in n for n in get_run_result(with_drive, r.run_id).notes)
    [b] = list_backups(with_drive)
    assert [loc["kind"] for loc in b.locations] == ["local"]
    drive.fail_uploads = False
    again = run_cleanup(with_drive, retention_days=30, notify=False)
    names = set(drive.in_folder(FOLDER))
    assert Path(r.backup_file).name in names and Path(again.backup_file).name in names
    assert all(loc["verified"] for b in list_backups(with_drive) for loc in b.locations)


def test_a_copy_whose_md5_does_not_match_is_removed_and_reported(with_drive: Settings, drive: FakeDrive) -> None:
    drive.corrupt_uploads = True
    r = run_cleanup(with_drive, notify=False)
    assert r.status == "success"
    assert any("md5Checksum" in n for n in r.notes)
    assert drive.in_folder(FOLDER) == {}  # the bad copy was deleted again
    drive.corrupt_uploads = False
    report = copy_missing(with_drive)
    assert [n for n, _ in report.copied] == [Path(r.backup_file).name] and report.failed == ()


def test_bad_credentials_are_reported_not_raised(demo_settings: Settings, drive: FakeDrive) -> None:
    s = dataclasses.replace(demo_settings, gdrive_folder_id=FOLDER, gdrive_credentials_json="{not json",
                            gdrive_api_endpoint=drive.url)
    r = run_cleanup(s, notify=False)
    assert r.status == "success"
    assert any("GDRIVE_CREDENTIALS_JSON" in n for n in r.notes)
    assert "{not json" not in json.dumps(r.notes)


def test_expiry_deletes_the_drive_copy_too(with_drive: Settings, drive: FakeDrive) -> None:
    first = run_cleanup(with_drive, retention_days=60, notify=False)
    run_cleanup(with_drive, retention_days=30, notify=False)
    old = Path(first.backup_file)
    m = json.loads(Path(str(old).removesuffix(".csv.gz") + ".manifest.json").read_text())
    m["created_at"] = "2000-01-01T00:00:00+00:00"
    Path(str(old).removesuffix(".csv.gz") + ".manifest.json").write_text(json.dumps(m))
    done = expire_backups(dataclasses.replace(with_drive, backup_retention_days="7"))
    [e] = done.expired
    assert e.name == old.name and any(w.startswith("Google Drive file ") for w in e.removed_from)
    assert old.name not in drive.in_folder(FOLDER) and len(drive.in_folder(FOLDER)) == 2


def test_a_stored_backup_without_a_local_copy_is_copied_from_the_store(
        with_drive: Settings, drive: FakeDrive, monkeypatch: pytest.MonkeyPatch) -> None:
    with moto_server() as s3:
        for k, v in {**ENV, "AWS_ENDPOINT_URL": s3}.items():
            monkeypatch.setenv(k, v)
        s = dataclasses.replace(with_drive, backup_store=f"s3://{new_bucket(s3)}/logs")
        r = run_cleanup(s, notify=False)
        assert r.backup_file is None and r.backup_url
        name = r.backup_url.rsplit("/", 1)[1]
        data = drive.in_folder(FOLDER)[name]["data"]
        assert hashlib.sha256(data).hexdigest() == r.sha256
        [b] = list_backups(s)
        assert {loc["kind"]: loc["verified"] for loc in b.locations} == {"store": True, "drive": True}


def test_backups_json_names_the_drive_file_id(with_drive: Settings, drive: FakeDrive) -> None:
    r = run_cleanup(with_drive, notify=False)
    p = run_cli(with_drive, "backups", "--json", GDRIVE_FOLDER_ID=FOLDER,
                GDRIVE_CREDENTIALS_JSON=with_drive.gdrive_credentials_json, GDRIVE_API_ENDPOINT=drive.url)
    assert p.returncode == 0, p.stderr
    [b] = json.loads(p.stdout)["backups"]
    fid = drive.in_folder(FOLDER)[Path(r.backup_file).name]["id"]
    assert {"kind": "drive", "where": fid, "verified": True} in b["locations"]


def _posted_text(slack: FakeSlack) -> str:
    return json.dumps([c.json for c in slack.calls("chat.postMessage")])


def test_the_slack_report_names_a_failed_drive_copy_and_the_backups_that_expired(
        with_drive: Settings, drive: FakeDrive) -> None:
    first = run_cleanup(with_drive, retention_days=60, notify=False)
    manifest = Path(first.backup_file.removesuffix(".csv.gz") + ".manifest.json")
    m = json.loads(manifest.read_text())
    m["created_at"] = "2000-01-01T00:00:00+00:00"
    manifest.write_text(json.dumps(m))
    drive.fail_uploads = True
    with FakeSlack() as slack:
        s = dataclasses.replace(with_drive, slack_bot_token=TOKEN, slack_api_base_url=slack.api_url,
                                backup_retention_days="7")
        r = run_cleanup(s, retention_days=30)
        assert r.status == "success" and r.notification == "sent"
        text = _posted_text(slack)
    assert Path(first.backup_file).name in text and "expired" in text
    assert f"Google Drive copy of {Path(r.backup_file).name} failed" in text


def test_expire_backups_alone_sends_a_short_report_unless_no_notify(with_drive: Settings) -> None:
    first = run_cleanup(with_drive, retention_days=60, notify=False)
    run_cleanup(with_drive, retention_days=30, notify=False)
    manifest = Path(first.backup_file.removesuffix(".csv.gz") + ".manifest.json")
    m = json.loads(manifest.read_text())
    m["created_at"] = "2000-01-01T00:00:00+00:00"
    manifest.write_text(json.dumps(m))
    with FakeSlack() as slack:
        env = dict(SLACK_BOT_TOKEN=TOKEN, SLACK_API_BASE_URL=slack.api_url, BACKUP_RETENTION_DAYS="7")
        quiet = run_cli(with_drive, "expire-backups", "--dry-run", **env)
        assert quiet.returncode == 0, quiet.stderr
        assert slack.calls("chat.postMessage") == []
        p = run_cli(with_drive, "expire-backups", **env)
        assert p.returncode == 0, p.stderr
        [post] = slack.calls("chat.postMessage")
    assert Path(first.backup_file).name in json.dumps(post.json) and "expired" in json.dumps(post.json)
    assert not manifest.exists()
