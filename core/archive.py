"""Backup files: a gzip CSV written batch by batch, and its manifest.

Each batch of rows is one complete gzip member, fsynced before the batch's DELETE
commits. Concatenated members are one valid gzip stream (``zcat``, ``gzip.open``), so
a file cut back to the end of the last committed batch is always a valid backup:
that is what crash recovery does with the byte offset the database recorded in the
same transaction as the DELETE.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .deflate import DeflateError, codec_for, decompressobj
from .errors import BackupMismatch, CleanupFailed

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DATA_SUFFIX = ".csv.gz"
MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_SUFFIX = ".partial"
_BUFFER = 1 << 20  # compress in 1 MiB pieces: few deflate calls, flat memory
_PENDING = 4  # pieces in flight per pipeline stage: a few MiB whatever the table size
_NOT_QUOTE_OR_NEWLINE = bytes(b for b in range(256) if b not in b'"\n')

# Files whose every member a MemberWriter of this process decompressed again and
# counted when it committed it: (device, inode) -> (size, sha256, CSV records with the
# header). The next scan_file of that file (finish_backup's) trusts that count only if
# the bytes, read again, have that sha256; any other scan decompresses in full.
_VERIFIED: dict[tuple[int, int], tuple[int, str, int]] = {}


class RecordCounter:
    """Counts CSV records (newlines outside double quotes) in text fed piece by piece.

    Keeps only quotes and newlines (C speed), drops adjacent quote pairs (they do not
    change the parity), and counts the newlines at even quote parity. The only state
    between pieces is that parity, so a piece may end anywhere, mid-field included.
    """

    def __init__(self) -> None:
        self.records = 0
        self.in_quotes = 0  # 1 while inside a quoted field

    def feed(self, text: bytes) -> None:
        parts = text.translate(None, _NOT_QUOTE_OR_NEWLINE).replace(b'""', b"").split(b'"')
        self.records += b"".join(parts[self.in_quotes::2]).count(b"\n")
        self.in_quotes = (self.in_quotes + len(parts) - 1) & 1


def manifest_path_for(data_path: str | os.PathLike[str]) -> Path:
    p = Path(data_path)
    name = p.name
    if name.endswith(PARTIAL_SUFFIX):
        name = name[: -len(PARTIAL_SUFFIX)]
    if not name.endswith(DATA_SUFFIX):
        raise ValueError(f"not a backup data file name: {p.name}")
    return p.with_name(name[: -len(DATA_SUFFIX)] + MANIFEST_SUFFIX)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or create in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MemberWriter:
    """Appends gzip members to a new file; never opens an existing one.

    ``begin()`` … ``write()`` … ``commit_member()`` makes one durable member and
    returns the file length; ``rollback_member()`` cuts the file back to where the
    member began (used when the batch's transaction does not commit).

    Pieces of 1 MiB are compressed in a second thread (ISA-L or zlib, see
    :mod:`core.deflate`), and a third thread decompresses every compressed piece again
    and counts its CSV records (both release the GIL, so this overlaps with reading
    rows). ``commit_member`` waits for both: a member is written, read back, holds
    exactly the batch's records, and is fsynced before the batch's DELETE can commit.
    """

    def __init__(self, path: str | os.PathLike[str], level: int, *, create: bool = True) -> None:
        self.path = Path(path)
        flags = os.O_WRONLY | (os.O_CREAT | os.O_EXCL if create else 0)
        self._fd = os.open(self.path, flags, 0o640)
        if create:
            fsync_dir(self.path.parent)
        self.level = level
        self.codec = codec_for(level)
        self.size = os.lseek(self._fd, 0, os.SEEK_END)
        self.sha = hashlib.sha256()
        self._z: Any = None
        self._buf: list[bytes] = []
        self._buflen = 0
        self._mark: tuple[int, Any, int] | None = None  # (size, sha, records) where the member began
        self.raw_bytes = 0
        st = os.fstat(self._fd)
        self._key = (st.st_dev, st.st_ino)
        self._whole = self.size == 0  # this writer sees every byte of the file
        self._records = 0  # CSV records (header included) of the committed members
        self._check: _MemberCheck | None = None
        self._zpool = ThreadPoolExecutor(1, thread_name_prefix="backup-gzip")
        self._vpool = ThreadPoolExecutor(1, thread_name_prefix="backup-verify")
        self._zq: deque[Future[bytes]] = deque()  # pieces compressed and written, in file order
        self._vq: deque[Future[None]] = deque()  # read-back checks of written pieces

    def begin(self) -> None:
        self._mark = (self.size, self.sha.copy(), self._records)
        self._z = self.codec.compressobj()
        self._check = _MemberCheck()

    def write(self, data: bytes) -> None:
        """Buffer CSV bytes (psycopg2 calls this once per row: keep it short)."""
        self._buf.append(data)
        self._buflen += len(data)
        if self._buflen >= _BUFFER:
            self._compress()

    def write_text(self, text: str) -> None:
        self.write(text.encode("utf-8"))

    def _compress(self, final: bool = False) -> None:
        chunk = b"".join(self._buf)
        self._buf.clear()
        self.raw_bytes += len(chunk)
        self._buflen = 0
        if chunk or final:
            self._zq.append(self._zpool.submit(self._pack, self._z, chunk, final))
        self._drain(0 if final else _PENDING)

    def _pack(self, z: Any, chunk: bytes, final: bool) -> bytes:
        """In the compressing thread, one piece at a time and in order: compress, append to the file."""
        data = z.compress(chunk)
        if final:
            data += z.flush()
        if data:
            self._out(data)
        return data

    def _drain(self, keep: int) -> None:
        """Hand written pieces to the checker in file order; at most ``keep`` in flight per stage."""
        while self._zq and (len(self._zq) > keep or self._zq[0].done()):
            data = self._zq.popleft().result()
            if data:
                assert self._check is not None
                self._vq.append(self._vpool.submit(self._check.feed, data))
        while self._vq and (len(self._vq) > keep or self._vq[0].done()):
            self._vq.popleft().result()

    def _out(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.sha.update(data)
        self.size += len(data)

    def commit_member(self, records: int) -> int:
        """Finish the member, check that it reads back as ``records`` CSV records, fsync.

        ``records`` counts the header line if this member holds it. Returns the durable
        file length. Raises CleanupFailed (nothing is fsynced) when the member does not
        decompress or holds another number of records.
        """
        self._compress(final=True)
        assert self._check is not None
        try:
            found = self._check.finish()
        except ValueError as exc:
            raise CleanupFailed(f"the backup does not read back ({exc}); batch rolled back") from None
        if found != records:
            raise CleanupFailed(f"the backup reads back as {found} CSV records, not {records}; batch rolled back")
        self._z = None
        os.fsync(self._fd)
        self._records += records
        self._register()
        return self.size  # the mark stays: the batch's transaction may still roll back

    def _register(self) -> None:
        if self._whole:
            _VERIFIED[self._key] = (self.size, self.sha.hexdigest(), self._records)

    def _settle(self) -> None:
        """Wait for work in flight, dropping its results and errors."""
        for q in (self._zq, self._vq):
            while q:
                q.popleft().exception()

    def rollback_member(self) -> None:
        """Forget the current member, committed or not: truncate back to where it began.

        Called when the batch's transaction does not commit, also after commit_member()
        (a failed journal update), so that a retried batch cannot leave its rows twice.
        """
        if self._mark is None:
            return
        self._settle()
        self.size, self.sha, self._records = self._mark
        os.ftruncate(self._fd, self.size)
        os.lseek(self._fd, self.size, os.SEEK_SET)
        os.fsync(self._fd)
        self._buf.clear()
        self._buflen = 0
        self._z = None
        self._check = None
        self._mark = None
        self._register()

    def member_committed(self) -> None:
        """The batch's transaction committed: its member is final, and no later rollback may cut it
        (a failure before the next ``begin()`` would otherwise truncate rows the database deleted)."""
        self._mark = None

    def close(self) -> None:
        self._settle()
        self._zpool.shutdown()
        self._vpool.shutdown()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _MemberCheck:
    """Decompresses one member's pieces as they are written and counts its CSV records."""

    def __init__(self) -> None:
        self._d = decompressobj()
        self._counter = RecordCounter()

    def feed(self, data: bytes) -> None:
        if self._d.eof:
            raise ValueError("data after the end of the gzip member")
        try:
            text = self._d.decompress(data)
        except DeflateError as exc:
            raise ValueError(f"not a valid gzip stream: {exc}") from None
        if self._d.unused_data:
            raise ValueError("data after the end of the gzip member")
        self._counter.feed(text)

    def finish(self) -> int:
        if not self._d.eof:
            raise ValueError("the gzip member is cut short")
        if self._counter.in_quotes:
            raise ValueError("the CSV ends inside a quoted field")
        return self._counter.records


@dataclass(frozen=True)
class Scan:
    sha256: str
    rows: int
    size_bytes: int
    complete: bool  # the gzip stream ended cleanly
    problem: str | None = None


def iter_decompressed(path: str | os.PathLike[str], *, chunk: int = _BUFFER) -> Iterator[bytes]:
    """Stream the decompressed bytes of a multi-member gzip file.

    Raises ValueError when the file is not gzip or is cut short.
    """
    d = decompressobj()
    in_member = False
    with open(path, "rb") as f:
        while raw := f.read(chunk):
            data, out = raw, []
            while data:
                in_member = True
                try:
                    out.append(d.decompress(data))
                except DeflateError as exc:
                    raise ValueError(f"not a valid gzip file ({exc})") from None
                if d.eof:
                    data = d.unused_data
                    d = decompressobj()
                    in_member = False
                else:
                    data = b""
            piece = b"".join(out)
            if piece:
                yield piece
    if in_member:
        raise ValueError("the gzip stream is cut short (truncated file)")


def scan_file(path: str | os.PathLike[str]) -> Scan:
    """sha256 of the bytes, and CSV records after the header, in one streaming pass.

    Records are counted as newlines outside double quotes, so messages with line
    breaks count once. Never raises for a corrupt file: ``complete`` is False instead.
    """
    known = _known_scan(path)
    if known is not None:
        return known
    sha = hashlib.sha256()
    counter = RecordCounter()
    size = 0
    problem = None
    d = decompressobj()
    in_member = False
    try:
        with open(path, "rb") as f:
            while raw := f.read(_BUFFER):
                sha.update(raw)
                size += len(raw)
                data = raw
                pieces = []
                while data:
                    in_member = True
                    pieces.append(d.decompress(data))
                    if d.eof:
                        data = d.unused_data
                        d = decompressobj()
                        in_member = False
                    else:
                        data = b""
                counter.feed(b"".join(pieces))
    except DeflateError as exc:
        problem = f"not a valid gzip file ({exc})"
    except OSError as exc:
        problem = f"cannot read ({exc.strerror})"
    if problem is None and in_member:
        problem = "the gzip stream is cut short (truncated file)"
    if problem is None and counter.in_quotes:
        problem = "the CSV ends inside a quoted field"
    rows = max(counter.records - 1, 0)  # minus the header line
    return Scan(sha.hexdigest(), rows, size, problem is None, problem)


def _known_scan(path: str | os.PathLike[str]) -> Scan | None:
    """The first scan of a file a MemberWriter of this process wrote and read back, member
    by member: only the sha256 is recomputed, and the counts are used only if it matches."""
    try:
        st = os.stat(path)
        known = _VERIFIED.pop((st.st_dev, st.st_ino), None)
        if known is None or known[0] != st.st_size:
            return None
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            while raw := f.read(_BUFFER):
                sha.update(raw)
    except OSError:
        return None
    if sha.hexdigest() != known[1]:
        return None
    return Scan(known[1], max(known[2] - 1, 0), st.st_size, True)


def write_json_atomic(path: Path, payload: dict[str, Any], *, overwrite: bool = False) -> None:
    """Write JSON durably: temp file, fsync, rename (or link, to never overwrite)."""
    tmp = path.with_name(path.name + ".tmp")
    data = (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(data)
        while view:  # a write on a full disk can be short: never leave a cut manifest behind
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if overwrite:
        os.replace(tmp, path)
    else:
        os.link(tmp, path)  # FileExistsError rather than overwrite
        os.unlink(tmp)
    fsync_dir(path.parent)


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError("manifest is not a JSON object")
    return data


def check_against_manifest(path: Path, manifest: dict[str, Any], scan: Scan) -> None:
    """Raise BackupMismatch unless the scan matches the manifest's sha256 and rows."""
    if not scan.complete:
        raise BackupMismatch(str(path), "the file", "complete", scan.problem)
    if scan.sha256 != manifest.get("sha256"):
        raise BackupMismatch(str(path), "sha256", manifest.get("sha256"), scan.sha256)
    if scan.rows != manifest.get("rows"):
        raise BackupMismatch(str(path), "row count", manifest.get("rows"), scan.rows)
