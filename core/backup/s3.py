"""An S3-compatible object store (``BACKUP_STORE=s3://bucket/prefix``): the durable home of backups.

Endpoint and keys come from the standard ``AWS_*`` variables (boto3 reads them). Layout
(docs/design.md, "The object store"): ``<prefix>/<name>.csv.gz`` and
``<prefix>/<name>.manifest.json`` (written last: it makes a stored backup final), and,
while a run is under way, one object per committed batch,
``<prefix>/<name>.parts/<sequence>.csv.gz``. Every upload is checked: a single PUT's
ETag against the MD5 of the bytes sent (or the object read back when the service's
ETag is not an MD5); a final object is streamed back and its sha256 recomputed.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Any

from ..errors import BadSetting, StorageError, describe
from .scan import BUFFER

log = logging.getLogger(__name__)

SCHEME = "s3://"
PARTS = ".parts/"
_MULTIPART = 64 * 1024 * 1024  # larger final objects go up in 64 MiB parts (aborted on failure)
_MIN_PART = 5 * 1024 * 1024  # S3's smallest multipart part (but the last)


class StoreError(StorageError):
    """The object store refused or failed a request; names the store."""

    def __init__(self, url: str, what: str, why: str) -> None:
        super().__init__(f"backup store {url}: {what} failed ({why})")


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix without slashes) of ``s3://bucket/prefix``. Raises ValueError."""
    if not url.startswith(SCHEME):
        raise ValueError("must start with s3://")
    bucket, _, prefix = url[len(SCHEME):].partition("/")
    if not bucket:
        raise ValueError("names no bucket")
    return bucket, prefix.strip("/")


def check_store_url(env: str, value: str | None) -> None:
    """Setting check for BACKUP_STORE."""
    if value:
        try:
            parse_url(value)
        except ValueError as exc:
            raise BadSetting(env, value, f"{exc} (s3://bucket/prefix)") from None


def segment_name(name: str, sequence: int) -> str:
    """The object of a run's ``sequence``-th committed batch (1-based)."""
    return f"{name}{PARTS}{sequence:08d}.csv.gz"


_clients: dict[str, Any] = {}


def _client() -> Any:
    """One boto3 client per endpoint (the AWS_* variables as they are now)."""
    import os

    import boto3
    from botocore.config import Config

    key = "|".join(os.environ.get(v, "") for v in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_DEFAULT_REGION"))
    if key not in _clients:
        # Checksums "when_required": botocore 1.36+ otherwise adds its own CRC32 to every upload (a header or an
        # aws-chunked trailer) and checks response CRCs. Integrity does not rest on them: every upload carries
        # Content-MD5 and its ETag is compared here, an assembled object's part and multipart ETags are checked,
        # a streamed final object against its sha256, and each gzip member has its own CRC. Left on, they cost
        # CPU on both ends (docs/benchmarks.md) and S3-compatible services such as R2 and B2 refuse them.
        _clients[key] = boto3.client("s3", config=Config(retries={"max_attempts": 3, "mode": "standard"},
                                                         connect_timeout=10, read_timeout=60,
                                                         request_checksum_calculation="when_required",
                                                         response_checksum_validation="when_required"))
    return _clients[key]


class S3Store:
    """A bucket and prefix holding backups by name (names are plain file names, never paths)."""

    def __init__(self, url: str, client: Any | None = None) -> None:
        self.bucket, self.prefix = parse_url(url)
        self.base = f"{SCHEME}{self.bucket}/{self.prefix}".rstrip("/")
        self.client = client or _client()

    @classmethod
    def from_settings(cls, settings: Any) -> S3Store | None:
        url = getattr(settings, "backup_store", None)
        return cls(url) if url else None

    def key(self, name: str) -> str:
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"not a backup object name: {name!r}")
        return f"{self.prefix}/{name}" if self.prefix else name

    def url(self, name: str) -> str:
        return f"{SCHEME}{self.bucket}/{self.key(name)}"

    def name_of(self, url: str) -> str | None:
        """The object name of a URL inside this store, or None."""
        head = self.base + "/"
        return url[len(head):] if url.startswith(head) and "/" not in url[len(head):] else None

    @contextmanager
    def _call(self, what: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError, OSError) as exc:
            raise StoreError(self.base, what, describe(exc)) from None

    def probe(self) -> None:
        """Write, read back and remove a small object. Raises BadSetting (BACKUP_STORE) naming the store."""
        name = f".write-probe-{uuid.uuid4().hex}"
        body = name.encode()
        try:
            self.put_bytes(name, body)
            if self.read_bytes(name) != body:
                raise StoreError(self.base, "reading the probe back", "other bytes came back")
            self.delete(name)
        except StoreError as exc:
            raise BadSetting("BACKUP_STORE", self.base, f"is not usable: {exc.one_line()}") from None

    def put_bytes(self, name: str, data: bytes, md5: Any = None) -> str:
        """One PUT, confirmed: the ETag is the bytes' MD5, or the object reads back as the same bytes.

        ``md5``: the hashlib MD5 of ``data`` when the caller has it already. Returns the MD5 (hex).
        """
        md5 = md5 if md5 is not None else hashlib.md5(data, usedforsecurity=False)
        with self._call(f"uploading {name}"):
            r = self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data,
                                       ContentMD5=base64.b64encode(md5.digest()).decode())
        if str(r.get("ETag", "")).strip('"') != md5.hexdigest() and self.read_bytes(name) != data:
            raise StoreError(self.base, f"uploading {name}", "the stored object differs from the bytes sent")
        return str(md5.hexdigest())

    def read_bytes(self, name: str) -> bytes:
        with self._call(f"reading {name}"):
            return self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read()

    def upload_file(self, name: str, source: Path) -> None:
        """Upload a local file (multipart above 64 MiB; an upload that fails is aborted)."""
        from boto3.s3.transfer import TransferConfig

        cfg = TransferConfig(multipart_threshold=_MULTIPART, multipart_chunksize=_MULTIPART, use_threads=False)
        with self._call(f"uploading {name}"):
            self.client.upload_file(str(source), self.bucket, self.key(name), Config=cfg)

    def stream(self, name: str) -> Iterator[bytes]:
        """The object's bytes in 1 MiB pieces."""
        with self._call(f"reading {name}"):
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"]
            yield from body.iter_chunks(BUFFER)

    def sha256_of(self, name: str) -> tuple[str, int]:
        """(sha256, size) of the stored object, streamed back."""
        sha, size = hashlib.sha256(), 0
        for piece in self.stream(name):
            sha.update(piece)
            size += len(piece)
        return sha.hexdigest(), size

    def download(self, name: str, target: Path) -> None:
        """Copy the object to a new local file (never overwrites)."""
        with open(target, "xb") as f:
            for piece in self.stream(name):
                f.write(piece)

    def _keys(self, under: str, *, flat: bool) -> Iterator[dict[str, Any]]:
        extra = {"Delimiter": "/"} if flat else {}
        with self._call("listing objects"):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self.key(under) if under else (self.prefix + "/" if self.prefix else ""),
                    **extra):
                yield from page.get("Contents", [])

    def list(self, suffix: str = "") -> list[str]:
        """Names of the objects directly under the prefix ending in ``suffix`` (segments excluded)."""
        cut = len(self.prefix) + 1 if self.prefix else 0
        return [o["Key"][cut:] for o in self._keys("", flat=True) if o["Key"].endswith(suffix)]

    def delete(self, name: str) -> None:
        with self._call(f"deleting {name}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    def exists(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        with self._call(f"looking up {name}"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self.key(name))
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code")) in {"404", "NoSuchKey", "NotFound"}:
                    return False
                raise
        return True

    def segments(self, name: str) -> list[tuple[int, int]]:
        """(sequence, size) of a run's batch objects, in order."""
        out = []
        for o in self._keys(name + PARTS, flat=False):
            stem = o["Key"].rsplit("/", 1)[-1].split(".", 1)[0]
            if stem.isdigit():
                out.append((int(stem), int(o["Size"])))
        return sorted(out)

    def delete_segments(self, name: str) -> int:
        keys = [o["Key"] for o in self._keys(name + PARTS, flat=False)]
        for i in range(0, len(keys), 1000):
            with self._call(f"deleting the batch objects of {name}"):
                self.client.delete_objects(Bucket=self.bucket,
                                           Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
        return len(keys)

    def compose(self, name: str, source: Path, uploaded: SegmentUploader | None = None) -> bool:
        """Build ``name`` in the store from its batch objects (multipart UploadPartCopy) instead of uploading
        ``source`` again; False when they cannot make it (a batch object under 5 MiB but the last, sizes that do
        not add up to the file's). Checked without reading it back: each part's ETag must be the MD5 of the local
        bytes at its place, and the object's ETag the multipart ETag of those. A failure aborts the upload.

        ``uploaded``: this run's uploader, when it stored exactly these batch objects. Its MD5s (of the bytes
        written at each place) stand for the local bytes, and the parts it already copied in the background
        are kept when their ETag is the MD5 at their place (any other is copied again).
        """
        segs = self.segments(name)
        sizes = [size for _, size in segs]
        usable = not (not segs or len(segs) > 10_000 or [seq for seq, _ in segs] != list(range(1, len(segs) + 1))
                      or any(size < _MIN_PART for size in sizes[:-1]) or sum(sizes) != source.stat().st_size)
        ours = uploaded if usable and uploaded is not None and uploaded.ends == list(accumulate(sizes)) else None
        if uploaded is not None and ours is None:
            uploaded.discard()  # its copies are of no use here: abort their upload
        if not usable:
            return False
        key = self.key(name)
        with self._call(f"assembling {name} from its batch objects"):
            upload = (ours and ours.upload) or self.client.create_multipart_upload(Bucket=self.bucket,
                                                                                   Key=key)["UploadId"]
            try:
                etag = self._copy_parts(name, upload, source, sizes, ours=ours)
            except BaseException:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
                raise
            finally:
                if ours is not None:  # completed or aborted here
                    ours.upload = None
                    ours.parts.clear()
        if etag is None:
            raise StoreError(self.base, f"assembling {name}", "a part's checksum is not the local bytes' MD5")
        return True

    def _copy_parts(self, name: str, upload: str, source: Path, sizes: list[int], *,
                    ours: SegmentUploader | None) -> str | None:
        key, parts, digests = self.key(name), [], []
        with open(source, "rb") as f:
            for number, size in enumerate(sizes, start=1):
                if ours is not None:  # the MD5 of the bytes at this place, taken as they were written
                    want = ours.md5s[number - 1]
                else:
                    want = hashlib.md5(f.read(size), usedforsecurity=False).hexdigest()
                got = ours.parts.get(number, "") if ours is not None else ""
                if got.strip('"') != want:  # not copied yet, or copied from an object replaced since
                    got = self.copy_part(name, upload, number)
                if got.strip('"') != want:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
                    return None
                parts.append({"ETag": got, "PartNumber": number})
                digests.append(bytes.fromhex(want))
        r = self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload,
                                                  MultipartUpload={"Parts": parts})
        whole = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest() + f"-{len(parts)}"
        return whole if str(r.get("ETag", "")).strip('"') == whole else None

    def open_upload(self, name: str) -> str:
        """Start the multipart upload of ``name``; its id."""
        with self._call(f"starting the upload of {name}"):
            return str(self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key(name))["UploadId"])

    def copy_part(self, name: str, upload: str, number: int) -> str:
        """Copy batch object ``number`` into part ``number`` of ``upload`` (server side); the part's ETag."""
        with self._call(f"copying batch {number} of {name}"):
            r = self.client.upload_part_copy(
                Bucket=self.bucket, Key=self.key(name), UploadId=upload, PartNumber=number,
                CopySource={"Bucket": self.bucket, "Key": self.key(segment_name(name, number))})
        return str(r["CopyPartResult"]["ETag"])

    def abort_upload(self, name: str, upload: str) -> None:
        with self._call(f"aborting the upload of {name}"):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key(name), UploadId=upload)

    def abort_open_uploads(self, name: str, keep: str | None = None) -> int:
        """Abort the multipart uploads left open under ``name`` (a run killed while uploading), but ``keep``."""
        n = 0
        with self._call("listing open uploads"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.key(name))
            for page in pages:
                for u in page.get("Uploads", []):
                    if u["UploadId"] != keep:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"])
                        n += 1
        return n


class SegmentUploader:
    """The writer's hook: each committed gzip member goes up as its batch's object before the DELETE commits.

    A member rolled back and written again (a retried batch) starts where the rolled-back
    one started, so it gets the same sequence number and replaces its object.

    Once confirmed, a batch object is also copied server side (UploadPartCopy) into the final
    object's multipart upload, off the batch's path: the writer runs the callables returned here
    in order on a thread of their own (the only one touching ``upload`` and ``parts`` until the
    writer is closed), and no batch waits for them. The end of the run then only copies what is
    missing and completes (:meth:`S3Store.compose`), instead of copying every part while nothing
    else runs. Only while every object before is at least 5 MiB (S3's smallest part but the last;
    otherwise the file is uploaded whole at the end). These copies prove nothing by themselves:
    compose keeps a part only when its ETag is the MD5 at its place (a part copied before its
    batch was retried is copied again), a failed copy is only logged, and an upload left open by
    a kill is aborted by the recovery that finishes the backup.
    """

    def __init__(self, store: S3Store, name: str) -> None:
        self.store, self.name = store, name
        self.ends: list[int] = []  # end offset of each stored batch object, in order
        self.md5s: list[str] = []  # MD5 (hex) of each, as written and confirmed
        self.upload: str | None = None  # the final object's multipart upload, opened by the first copy
        self.parts: dict[int, str] = {}  # part number -> ETag of its background copy

    def __call__(self, path: Path, start: int, end: int, md5: Any = None) -> Callable[[], None] | None:
        kept = sum(1 for e in self.ends if e <= start)
        del self.ends[kept:], self.md5s[kept:]
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        if len(data) != end - start:
            raise StoreError(self.store.base, f"uploading batch {kept + 1}", "the local member is short")
        self.md5s.append(self.store.put_bytes(segment_name(self.name, kept + 1), data, md5))
        self.ends.append(end)
        # a part under 5 MiB may only be the last: past one, the final object is uploaded whole instead
        sizes = [b - a for a, b in pairwise([0, *self.ends])]
        if all(size >= _MIN_PART for size in sizes[:-1]):
            return partial(self._copy, kept + 1)
        return None

    def _copy(self, number: int) -> None:
        try:
            if self.upload is None:
                self.upload = self.store.open_upload(self.name)
            self.parts[number] = self.store.copy_part(self.name, self.upload, number)
        except StoreError as exc:
            log.info("batch %d of %s is copied into the final object at the end (%s)", number, self.name,
                     exc.one_line())

    def discard(self) -> None:
        """Abort the multipart upload the copies opened, unless compose completed it (none is left open)."""
        upload, self.upload = self.upload, None
        self.parts.clear()
        if upload is not None:
            try:
                self.store.abort_upload(self.name, upload)
            except StoreError as exc:  # the recovery that finishes this backup aborts it
                log.warning("%s", exc.one_line())
