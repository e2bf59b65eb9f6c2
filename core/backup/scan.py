"""Reading a backup back: decompress its gzip members, count its CSV records, hash its bytes.

A backup is a run of concatenated gzip members (one per batch); :func:`_inflate` is
the one loop that walks them. :func:`scan_file` never raises (a problem is reported in
the :class:`Scan`); :func:`iter_decompressed` raises :class:`BackupReadError`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..errors import BackupReadError, BackupTooLarge
from .deflate import DeflateError, decompressobj

BUFFER = 1 << 20  # read and compress in 1 MiB pieces: few library calls, flat memory
MAX_RECORD_BYTES = 64 << 20  # one CSV record (a row) at most
MAX_ROW_BYTES = 4 << 20  # decompressed bytes per row of a file, on average, at most
HARD_CAP_BYTES = 1 << 40  # decompressed bytes of one file, whatever its manifest says
_NOT_QUOTE_OR_NEWLINE = bytes(b for b in range(256) if b not in b'"\n')


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


@dataclass(frozen=True)
class Scan:
    """What reading a backup file found: the hash of its bytes and its CSV records after the header."""

    sha256: str
    rows: int
    size_bytes: int
    complete: bool  # the gzip stream ended cleanly
    problem: str | None = None


@dataclass(frozen=True)
class ReadLimits:
    """How much reading one backup file may cost, whatever it contains (a planted bomb included).

    ``max_bytes``: decompressed bytes; ``max_members``: gzip members (None: any);
    ``max_record``: bytes of one CSV record. :meth:`for_rows` derives them from a
    manifest's (or journal's) row count.
    """

    max_bytes: int = HARD_CAP_BYTES
    max_members: int | None = None
    max_record: int = MAX_RECORD_BYTES

    @classmethod
    def for_rows(cls, rows: object) -> ReadLimits:
        """Limits for a file said to hold ``rows`` records: at most MAX_ROW_BYTES a row on average
        (plus one maximal record), one gzip member per row (plus a few), never over the hard cap."""
        n = rows if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0 else 0
        return cls(min(HARD_CAP_BYTES, MAX_RECORD_BYTES + n * MAX_ROW_BYTES), n + 16, MAX_RECORD_BYTES)


NO_LIMITS = ReadLimits()


def _inflate(raw: Iterable[bytes], limits: ReadLimits = NO_LIMITS) -> Iterator[bytes]:
    """The decompressed bytes of consecutive gzip members, in pieces of at most BUFFER bytes.

    Raises BackupReadError when the data is not gzip or ends inside a member,
    BackupTooLarge when it goes over ``limits`` (memory stays flat either way).
    """
    d: Any = decompressobj()
    in_member = False
    total = members = 0
    for data in raw:
        more = True
        while data or more:
            if not in_member:
                members += 1
                if limits.max_members is not None and members > limits.max_members:
                    raise BackupTooLarge(f"more than {limits.max_members} gzip members, more than its rows allow")
            in_member = True
            try:
                piece = d.decompress(data, BUFFER)
            except DeflateError as exc:
                raise BackupReadError(f"not a valid gzip file ({exc})") from None
            total += len(piece)
            if total > limits.max_bytes:
                raise BackupTooLarge(f"decompresses to more than {limits.max_bytes:,} bytes, more than its "
                                     "rows allow (a decompression bomb?)")
            if piece:
                yield piece
            if d.eof:  # a member ended: the rest of the chunk starts the next one
                data, more = d.unused_data, False
                d = decompressobj()
                in_member = False
            else:  # output left inside the decompressor when the piece came out full
                data, more = d.unconsumed_tail, len(piece) == BUFFER
            if not data and not more:
                break
    if in_member:
        raise BackupReadError("the gzip stream is cut short (truncated file)")


def open_nofollow(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a file in BACKUP_DIR for reading, refusing a symbolic link (OSError ELOOP)."""
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")


def _chunks(path: str | os.PathLike[str], chunk: int, sha: Any | None = None) -> Iterator[bytes]:
    with open_nofollow(path) as f:
        while raw := f.read(chunk):
            if sha is not None:
                sha.update(raw)
            yield raw


def iter_decompressed(path: str | os.PathLike[str], *, chunk: int = BUFFER, limits: ReadLimits = NO_LIMITS,
                      sha256: str | None = None) -> Iterator[bytes]:
    """Stream the decompressed bytes of a multi-member gzip file, in pieces of at most BUFFER bytes.

    ``sha256``: the bytes read must have it, checked after the last piece (a file swapped
    after it was verified is caught before a restore commits). Raises BackupReadError when
    the file is not gzip, is cut short or has another sha256, BackupTooLarge over
    ``limits``, OSError when unreadable (or a symbolic link).
    """
    tap = _Tap()
    yield from _inflate(_chunks(path, chunk, tap), limits)
    if sha256 is not None and tap.hexdigest() != sha256:
        raise BackupReadError("the file changed after it was verified (its sha256 differs from the manifest)")


class PieceReader:
    """A read-only file object over decompressed pieces (for ``COPY … FROM STDIN``)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces, self._buf = pieces, b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buf) < size:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._buf += piece
        if size < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:size], self._buf[size:]
        return out


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, streamed."""
    sha = hashlib.sha256()
    for _ in _chunks(path, BUFFER, sha):
        pass
    return sha.hexdigest()


def scan_file(path: str | os.PathLike[str], *, known: Scan | None = None, limits: ReadLimits = NO_LIMITS) -> Scan:
    """sha256 of the bytes, and CSV records after the header, in one streaming pass.

    Records are counted as newlines outside double quotes, so messages with line
    breaks count once. Never raises for a corrupt file: ``complete`` is False instead.

    ``known``: what a MemberWriter verified while writing this very file
    (:meth:`MemberWriter.verified`). When the file still has that length and those
    bytes (the sha256 is recomputed), its counts are used instead of decompressing again.
    ``limits``: going over one is a problem like any other (``complete`` False).
    """
    if known is not None:
        trusted = _confirm(path, known)
        if trusted is not None:
            return trusted
    sha = _Tap()
    counter = RecordCounter()
    problem = None
    open_record = 0  # bytes since the last record's end (a lower bound, within one piece)
    try:
        for text in _inflate(_chunks(path, BUFFER, sha), limits):
            before = counter.records
            counter.feed(text)
            open_record = open_record + len(text) if counter.records == before else len(text) - text.rfind(b"\n")
            if open_record > limits.max_record:
                raise BackupTooLarge(f"a CSV record is longer than {limits.max_record:,} bytes")
    except BackupReadError as exc:
        problem = str(exc)
    except OSError as exc:
        problem = f"cannot read ({exc.strerror})"
    if problem is None and counter.in_quotes:
        problem = "the CSV ends inside a quoted field"
    rows = max(counter.records - 1, 0)  # minus the header line
    return Scan(sha.hexdigest(), rows, sha.size, problem is None, problem)


class _Tap:
    """A sha256 that also counts the bytes it saw."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        self._sha.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def _confirm(path: str | os.PathLike[str], known: Scan) -> Scan | None:
    """``known`` if the file has its length and sha256, else None (then it is scanned in full)."""
    try:
        if os.stat(path).st_size != known.size_bytes or sha256_of(path) != known.sha256:
            return None
    except OSError:
        return None
    return known
