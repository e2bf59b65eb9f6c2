"""Writing a backup: gzip members appended to a new file, each read back and fsynced.

Each batch of rows is one complete gzip member, fsynced before the batch's DELETE
commits. Concatenated members are one valid gzip stream (``zcat``, ``gzip.open``), so
a file cut back to the end of the last committed batch is always a valid backup:
that is what crash recovery does with the byte offset the database recorded in the
same transaction as the DELETE.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import BackupReadError, BackupWriteError
from .deflate import DeflateError, codec_for, decompressobj
from .scan import BUFFER, RecordCounter, Scan

log = logging.getLogger(__name__)

_PENDING = 4  # pieces in flight per pipeline stage: a few MiB whatever the table size


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
    :mod:`core.backup.deflate`), and a third thread decompresses every compressed piece
    again and counts its CSV records (both release the GIL, so this overlaps with reading
    rows). ``commit_member`` waits for both: a member is written, read back, holds
    exactly the batch's records, and is fsynced before the batch's DELETE can commit.
    Raises OSError (disk full, …) from the file system.
    """

    def __init__(self, path: str | os.PathLike[str], level: int) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        fsync_dir(self.path.parent)
        self.level = level
        self.codec = codec_for(level)
        self.size = 0
        self.sha = hashlib.sha256()
        self._z: Any = None
        self._buf: list[bytes] = []
        self._buflen = 0
        self._mark: tuple[int, Any, int] | None = None  # (size, sha, records) where the member began
        self._records = 0  # CSV records (header included) of the committed members
        self._check = _MemberCheck()
        self._zpool = ThreadPoolExecutor(1, thread_name_prefix="backup-gzip")
        self._vpool = ThreadPoolExecutor(1, thread_name_prefix="backup-verify")
        self._zq: deque[Future[bytes]] = deque()  # pieces compressed and written, in file order
        self._vq: deque[Future[None]] = deque()  # read-back checks of written pieces
        # Called with (path, start, end, md5) of each member once it is written, before commit_member
        # returns (the object store's batch upload); an error it raises rolls the batch back. ``md5`` is
        # the member's hashlib MD5, computed by the compressing thread as the bytes were written, so the
        # upload starts at once instead of hashing first. It may return more work for that member (the
        # store's server-side copy into the final object): run in order on a thread of its own, so that
        # neither a batch nor the next upload waits for it; close() does.
        self.on_member: Callable[[Path, int, int, Any], Callable[[], None] | None] | None = None
        self._upool: ThreadPoolExecutor | None = None
        self._apool: ThreadPoolExecutor | None = None
        self._md5: Any = None  # the current member's MD5 (only with on_member)

    def begin(self) -> None:
        self._mark = (self.size, self.sha.copy(), self._records)
        self._z = self.codec.compressobj()
        self._md5 = hashlib.md5(usedforsecurity=False) if self.on_member is not None else None
        self._check = _MemberCheck()

    def write(self, data: bytes) -> None:
        """Buffer CSV bytes (psycopg2 calls this once per row: keep it short)."""
        self._buf.append(data)
        self._buflen += len(data)
        if self._buflen >= BUFFER:
            self._compress()

    def write_text(self, text: str) -> None:
        self.write(text.encode("utf-8"))

    def _compress(self, final: bool = False) -> None:
        chunk = b"".join(self._buf)
        self._buf.clear()
        self._buflen = 0
        if chunk or final:
            self._zq.append(self._zpool.submit(self._pack, self._z, chunk, final))
        # the final piece: wait until it is written; commit_member waits for its read-back
        self._drain(0 if final else _PENDING, checks=not final)

    def _pack(self, z: Any, chunk: bytes, final: bool) -> bytes:
        """In the compressing thread, one piece at a time and in order: compress, append to the file."""
        data = z.compress(chunk)
        if final:
            data += z.flush()
        if data:
            self._out(data)
        return data

    def _drain(self, keep: int, checks: bool = True) -> None:
        """Hand written pieces to the checker in file order; at most ``keep`` in flight per stage
        (the checks' stage left as it is when ``checks`` is false)."""
        while self._zq and (len(self._zq) > keep or self._zq[0].done()):
            data = self._zq.popleft().result()
            if data:
                self._vq.append(self._vpool.submit(self._check.feed, data))
        while checks and self._vq and (len(self._vq) > keep or self._vq[0].done()):
            self._vq.popleft().result()

    def _out(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.sha.update(data)
        if self._md5 is not None:
            self._md5.update(data)
        self.size += len(data)

    def commit_member(self, records: int) -> int:
        """Finish the member, check that it reads back as ``records`` CSV records, fsync.

        ``records`` counts the header line if this member holds it. Returns the durable
        file length. Raises BackupWriteError (nothing is fsynced) when the member does not
        decompress or holds another number of records.
        """
        self._compress(final=True)
        # The member's bytes are written: its upload (BACKUP_STORE) overlaps the read-back of its last
        # pieces and the fsync; the member counts as committed only once all are done.
        upload = None if self.on_member is None else self._uploads().submit(
            self.on_member, self.path, self._mark[0] if self._mark else 0, self.size, self._md5)
        try:
            self._drain(0)
            self._check_and_sync(records)
        except BaseException:
            if upload is not None:
                upload.exception()  # wait: the rollback that follows truncates the file it reads
            raise
        if upload is not None:
            after = upload.result()
            if after is not None:
                if self._apool is None:
                    self._apool = ThreadPoolExecutor(1, thread_name_prefix="backup-after")
                self._apool.submit(_logged, after)
        self._records += records
        return self.size  # the mark stays: the batch's transaction may still roll back

    def _check_and_sync(self, records: int) -> None:
        try:
            found = self._check.finish()
        except BackupReadError as exc:
            raise BackupWriteError(f"the backup does not read back ({exc}); batch rolled back") from None
        if found != records:
            raise BackupWriteError(
                f"the backup reads back as {found} CSV records, not {records}; batch rolled back")
        self._z = None
        os.fsync(self._fd)

    def _uploads(self) -> ThreadPoolExecutor:
        if self._upool is None:
            self._upool = ThreadPoolExecutor(1, thread_name_prefix="backup-upload")
        return self._upool

    def verified(self) -> Scan:
        """What the committed members were checked to hold: this file's sha256, length and rows.

        Hand it to :func:`scan_file` (``known=``) to skip decompressing the file again.
        """
        return Scan(self.sha.hexdigest(), max(self._records - 1, 0), self.size, True)

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
        self._check = _MemberCheck()
        self._mark = None

    def member_committed(self) -> None:
        """The batch's transaction committed: its member is final, and no later rollback may cut it
        (a failure before the next ``begin()`` would otherwise truncate rows the database deleted)."""
        self._mark = None

    def close(self) -> None:
        self._settle()
        self._zpool.shutdown()
        self._vpool.shutdown()
        for pool in (self._upool, self._apool):
            if pool is not None:
                pool.shutdown()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _logged(work: Callable[[], None]) -> None:
    """Background work of the upload hook: nothing waits for its outcome, so an error is logged here."""
    try:
        work()
    except Exception:
        log.warning("background work after a member's upload failed", exc_info=True)


class _MemberCheck:
    """Decompresses one member's pieces as they are written and counts its CSV records."""

    def __init__(self) -> None:
        self._d = decompressobj()
        self._counter = RecordCounter()

    def feed(self, data: bytes) -> None:
        if self._d.eof:
            raise BackupReadError("data after the end of the gzip member")
        try:
            text = self._d.decompress(data)
        except DeflateError as exc:
            raise BackupReadError(f"not a valid gzip stream: {exc}") from None
        if self._d.unused_data:
            raise BackupReadError("data after the end of the gzip member")
        self._counter.feed(text)

    def finish(self) -> int:
        if not self._d.eof:
            raise BackupReadError("the gzip member is cut short")
        if self._counter.in_quotes:
            raise BackupReadError("the CSV ends inside a quoted field")
        return self._counter.records
