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
from typing import Any

from ..errors import BackupReadError
from .deflate import DeflateError, decompressobj

BUFFER = 1 << 20  # read and compress in 1 MiB pieces: few library calls, flat memory
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


def _inflate(raw: Iterable[bytes]) -> Iterator[bytes]:
    """The decompressed bytes of consecutive gzip members, one piece per raw chunk.

    Raises BackupReadError when the data is not gzip or ends inside a member.
    """
    d: Any = decompressobj()
    in_member = False
    for data in raw:
        out = []
        while data:
            in_member = True
            try:
                out.append(d.decompress(data))
            except DeflateError as exc:
                raise BackupReadError(f"not a valid gzip file ({exc})") from None
            if d.eof:  # a member ended: the rest of the chunk starts the next one
                data = d.unused_data
                d = decompressobj()
                in_member = False
            else:
                data = b""
        yield b"".join(out)
    if in_member:
        raise BackupReadError("the gzip stream is cut short (truncated file)")


def _chunks(path: str | os.PathLike[str], chunk: int, sha: Any | None = None) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while raw := f.read(chunk):
            if sha is not None:
                sha.update(raw)
            yield raw


def iter_decompressed(path: str | os.PathLike[str], *, chunk: int = BUFFER) -> Iterator[bytes]:
    """Stream the decompressed bytes of a multi-member gzip file.

    Raises BackupReadError when the file is not gzip or is cut short, OSError when unreadable.
    """
    for piece in _inflate(_chunks(path, chunk)):
        if piece:
            yield piece


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, streamed."""
    sha = hashlib.sha256()
    for _ in _chunks(path, BUFFER, sha):
        pass
    return sha.hexdigest()


def scan_file(path: str | os.PathLike[str], *, known: Scan | None = None) -> Scan:
    """sha256 of the bytes, and CSV records after the header, in one streaming pass.

    Records are counted as newlines outside double quotes, so messages with line
    breaks count once. Never raises for a corrupt file: ``complete`` is False instead.

    ``known``: what a MemberWriter verified while writing this very file
    (:meth:`MemberWriter.verified`). When the file still has that length and those
    bytes (the sha256 is recomputed), its counts are used instead of decompressing again.
    """
    if known is not None:
        trusted = _confirm(path, known)
        if trusted is not None:
            return trusted
    sha = _Tap()
    counter = RecordCounter()
    problem = None
    try:
        for text in _inflate(_chunks(path, BUFFER, sha)):
            counter.feed(text)
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
