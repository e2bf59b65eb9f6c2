"""BACKUP_STORE: backups in an S3-compatible object store (moto's server on loopback, the real boto3 client)."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import pytest

from core import get_run_result, list_history, run_cleanup
from core.backup import list_backups, restore_backup
from core.backup.expiry import expire_backups
from core.config import Settings
from core.models import utcnow
from tests.support.databases import table_snapshot
from tests.support.objectstore import ENV, client, moto_server, new_bucket, stored_state
from tests.support.processes import one_line_error, run_cli


@pytest.fixture(scope="module")
def s3() -> str:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def stored(demo_settings: Settings, s3: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for k, v in {**ENV, "AWS_ENDPOINT_URL": s3}.items():
        monkeypatch.setenv(k, v)
    return dataclasses.replace(demo_settings, backup_store=f"s3://{new_bucket(s3)}/logs")


def bucket_of(s: Settings) -> str:
    return s.backup_store[5:].split("/")[0]


def test_a_run_with_a_store_leaves_one_verified_object_and_manifest_and_no_local_copy(
        stored: Settings, s3: str, tmp_path: Path) -> None:
    before = len(table_snapshot(stored))
    r = run_cleanup(stored, notify=False)
    assert r.status == "success" and r.rows_deleted > 0
    assert r.backup_file is None and r.manifest_file is None
    assert r.backup_url and r.backup_url.startswith(stored.backup_store + "/") and r.backup_url.endswith(".csv.gz")
    state = stored_state(s3, bucket_of(stored), tmp_path)
    assert list(state["backups"]) == [r.backup_url.split("/", 3)[3]]
    assert len(state["objects"]) == 2  # data and manifest; no batch object, no probe
    assert len(next(iter(state["backups"].values()))) == r.rows_deleted == before - len(table_snapshot(stored))
    assert not list(Path(stored.backup_dir).glob("*.csv.gz*"))
    assert get_run_result(stored, r.run_id).backup_url == r.backup_url
    [b] = list_backups(stored)
    assert b.locations == ({"kind": "store", "where": r.backup_url, "verified": True},)


def test_keep_local_keeps_the_local_copy_beside_the_stored_one(stored: Settings) -> None:
    s = dataclasses.replace(stored, backup_keep_local="true")
    r = run_cleanup(s, notify=False)
    assert r.backup_file and Path(r.backup_file).is_file() and r.backup_url
    [b] = list_backups(s)
    assert [loc["kind"] for loc in b.locations] == ["local", "store"]
    assert all(loc["verified"] for loc in b.locations)


def test_an_unreachable_store_fails_the_run_before_any_delete_naming_the_store(
        stored: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    before = table_snapshot(stored)
    env = {**ENV, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "BACKUP_STORE": "s3://nowhere/logs"}
    p = run_cli(stored, "run", "--no-notify", **env)
    assert p.returncode == 2
    line = one_line_error(p.stderr)
    assert "BACKUP_STORE" in line and "s3://nowhere/logs" in line
    assert table_snapshot(stored) == before
    assert not list(Path(stored.backup_dir).glob("*.csv.gz*"))


def test_a_store_without_the_bucket_fails_the_run_before_any_delete(stored: Settings, s3: str) -> None:
    before = table_snapshot(stored)
    p = run_cli(stored, "run", "--no-notify", **ENV, AWS_ENDPOINT_URL=s3, BACKUP_STORE="s3://no-such-bucket/x")
    assert p.returncode == 2 and "s3://no-such-bucket/x" in one_line_error(p.stderr)
    assert table_snapshot(stored) == before


def test_restore_takes_a_store_url_and_puts_every_row_back(stored: Settings) -> None:
    before = table_snapshot(stored)
    r = run_cleanup(stored, notify=False)
    assert len(table_snapshot(stored)) < len(before)
    res = restore_backup(stored, r.backup_url)
    assert res.rows_restored == r.rows_deleted
    assert table_snapshot(stored) == before
    assert not list(Path(stored.backup_dir).glob("fetched-*"))


def _age_manifests(s: Settings, s3: str, ages: dict[str, int]) -> None:
    """Rewrite the stored manifests' created_at: ``ages`` maps a run id to its backup's age in days."""
    c, bucket = client(s3), bucket_of(s)
    for o in c.list_objects_v2(Bucket=bucket)["Contents"]:
        days = next((d for run_id, d in ages.items() if run_id[:8] in o["Key"]), None)
        if o["Key"].endswith(".manifest.json") and days is not None:
            m = json.loads(c.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
            m["created_at"] = (utcnow() - timedelta(days=days)).isoformat()
            c.put_object(Bucket=bucket, Key=o["Key"], Body=json.dumps(m).encode())


def test_expired_backups_go_from_every_location_but_the_tables_newest_stays(stored: Settings, s3: str) -> None:
    first = run_cleanup(stored, retention_days=60, notify=False)
    second = run_cleanup(stored, retention_days=30, notify=False)
    assert first.rows_deleted and second.rows_deleted
    _age_manifests(stored, s3, {first.run_id: 20, second.run_id: 10})
    s = dataclasses.replace(stored, backup_retention_days="7")
    preview = expire_backups(s, dry_run=True)
    assert [e.name for e in preview.expired] == [first.backup_url.rsplit("/", 1)[1]]
    assert len(list_backups(s)) == 2  # a dry run changes nothing
    done = expire_backups(s)
    assert done.expired[0].removed_from == (first.backup_url,)
    assert [b.file for b in list_backups(s)] == [second.backup_url]
    rows = [r for r in list_history(s) if r.status == "expired"]
    assert len(rows) == 1 and rows[0].backup_url == first.backup_url
    assert expire_backups(s).expired == ()  # the newest is never expired


def test_backups_json_lists_each_location(stored: Settings, s3: str) -> None:
    r = run_cleanup(dataclasses.replace(stored, backup_keep_local="true"), notify=False)
    p = run_cli(stored, "backups", "--json", **ENV, AWS_ENDPOINT_URL=s3, BACKUP_STORE=stored.backup_store)
    assert p.returncode == 0, p.stderr
    [b] = json.loads(p.stdout)["backups"]
    assert {loc["kind"]: loc["where"] for loc in b["locations"]} == {"local": r.backup_file, "store": r.backup_url}


def test_the_final_object_is_assembled_from_the_batch_objects_and_a_changed_one_is_refused(
        s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from core.backup.s3 import S3Store, StoreError, segment_name
    from tests.support.objectstore import open_uploads

    for k, v in {**ENV, "AWS_ENDPOINT_URL": s3}.items():
        monkeypatch.setenv(k, v)
    bucket = new_bucket(s3)
    store = S3Store(f"s3://{bucket}/p")
    pieces = [os.urandom(5 * 1024 * 1024 + 11), os.urandom(6 * 1024 * 1024), os.urandom(1000)]
    source = tmp_path / "b.csv.gz"
    source.write_bytes(b"".join(pieces))
    for i, piece in enumerate(pieces, start=1):
        store.put_bytes(segment_name("b.csv.gz", i), piece)
    assert store.compose("b.csv.gz", source)
    assert client(s3).get_object(Bucket=bucket, Key="p/b.csv.gz")["Body"].read() == source.read_bytes()
    store.put_bytes(segment_name("c.csv.gz", 1), pieces[0])
    store.put_bytes(segment_name("c.csv.gz", 2), b"x" + pieces[1][1:])  # not the local bytes
    other = tmp_path / "c.csv.gz"
    other.write_bytes(pieces[0] + pieces[1])
    with pytest.raises(StoreError):
        store.compose("c.csv.gz", other)
    assert open_uploads(s3, bucket) == [] and not store.exists("c.csv.gz")
    store.put_bytes(segment_name("d.csv.gz", 1), pieces[2])
    store.put_bytes(segment_name("d.csv.gz", 2), pieces[0])
    small_first = tmp_path / "d.csv.gz"
    small_first.write_bytes(pieces[2] + pieces[0])
    assert not store.compose("d.csv.gz", small_first)  # a part under 5 MiB but the last: uploaded instead


def test_parts_copied_during_the_run_are_kept_and_one_copied_before_its_batch_was_retried_is_copied_again(
        s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import os

    from core.backup.s3 import S3Store, SegmentUploader
    from tests.support.objectstore import open_uploads

    for k, v in {**ENV, "AWS_ENDPOINT_URL": s3}.items():
        monkeypatch.setenv(k, v)
    bucket = new_bucket(s3)
    store = S3Store(f"s3://{bucket}/p")
    copies: list[int] = []
    monkeypatch.setattr(store, "copy_part", lambda name, upload, n, f=store.copy_part: copies.append(n) or f(name, upload, n))
    up = SegmentUploader(store, "b.csv.gz")
    source = tmp_path / "b.csv.gz"
    members = [os.urandom(5 * 1024 * 1024 + 7), os.urandom(5 * 1024 * 1024 + 3), os.urandom(2000)]

    def put(at: int, member: bytes) -> object:  # what the writer does: append, then hand over the member
        with open(source, "r+b" if source.exists() else "wb") as f:
            f.truncate(at)
            f.seek(at)
            f.write(member)
        return up(source, at, at + len(member), hashlib.md5(member))

    put(0, members[0])()  # copied in the background at once
    put(len(members[0]), b"x" + members[1][1:])()  # this batch is rolled back and retried:
    put(len(members[0]), members[1])  # the same place again, other bytes; its copy did not happen (yet)
    put(len(members[0]) + len(members[1]), members[2])  # the last batch: left to the end
    assert copies == [1, 2] and up.upload in [u for u in _upload_ids(s3, bucket)]
    assert store.compose("b.csv.gz", source, up)
    assert copies == [1, 2, 2, 3]  # part 1 kept; the stale part 2 copied again; part 3 at the end
    assert client(s3).get_object(Bucket=bucket, Key="p/b.csv.gz")["Body"].read() == source.read_bytes()
    assert open_uploads(s3, bucket) == [] and up.upload is None


def _upload_ids(endpoint: str, bucket: str) -> list[str]:
    return [u["UploadId"] for u in client(endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def test_an_uploader_whose_objects_cannot_make_the_final_object_leaves_no_upload_open(
        s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import os

    from core.backup.s3 import S3Store, SegmentUploader
    from tests.support.objectstore import open_uploads

    for k, v in {**ENV, "AWS_ENDPOINT_URL": s3}.items():
        monkeypatch.setenv(k, v)
    bucket = new_bucket(s3)
    store = S3Store(f"s3://{bucket}/p")
    up = SegmentUploader(store, "s.csv.gz")
    source = tmp_path / "s.csv.gz"
    members = [os.urandom(1000), os.urandom(2000)]  # a first part under 5 MiB: no multipart object
    source.write_bytes(b"".join(members))
    copy = up(source, 0, 1000, hashlib.md5(members[0]))
    assert copy is not None  # may be the last part: copied
    copy()
    assert up(source, 1000, 3000, hashlib.md5(members[1])) is None  # the first was not: no more copies
    assert open_uploads(s3, bucket) == ["p/s.csv.gz"]
    assert not store.compose("s.csv.gz", source, up)  # uploaded whole instead
    assert open_uploads(s3, bucket) == [] and up.upload is None
