"""The backup's CSV: PostgreSQL COPY's conventions, written from Python rows (SQLite) and read back.

NULL is an empty unquoted field and every string is quoted, so '' is ``""``; a record
may span lines inside quotes. Reading streams, with flat memory, for restore and checks.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import BackupReadError, BackupTooLarge
from .scan import NO_LIMITS, ReadLimits, iter_decompressed


def csv_text(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def make_row_encoder(converters: list[Callable[[Any], Any] | None]) -> Callable[[tuple], str]:
    """A function turning a DB row into one CSV line in PostgreSQL's COPY convention.

    NULL is an empty unquoted field; every string is quoted, so '' is ``""``.
    """

    def field(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            return '"' + value.replace('"', '""') + '"'
        if isinstance(value, float):
            return repr(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return "\\x" + bytes(value).hex()
        return str(value)

    if not any(converters):
        def encode(row: tuple) -> str:
            return ",".join([field(v) for v in row]) + "\n"
    else:
        def encode(row: tuple) -> str:
            return ",".join(
                [field(c(v) if c is not None else v) for v, c in zip(row, converters, strict=True)]
            ) + "\n"
    return encode


def make_rows_encoder(converters: list[Callable[[Any], Any] | None]) -> Callable[[list[tuple]], str]:
    """Like :func:`make_row_encoder`, same output, for a list of rows at once.

    Works column by column so that strings, integers and NULLs, nearly every value,
    cost no Python function call (about 40% faster); other types go through the
    single-row encoder's rules.
    """
    one = make_row_encoder([None])

    def other(value: Any) -> str:
        return one((value,))[:-1]

    def encode_rows(rows: list[tuple]) -> str:
        if not rows:
            return ""
        cols = []
        for col, conv in zip(zip(*rows, strict=True), converters, strict=True):
            values = col if conv is None else map(conv, col)
            cols.append([
                '"' + v.replace('"', '""') + '"' if v.__class__ is str else "" if v is None
                else str(v) if v.__class__ is int else other(v)
                for v in values
            ])
        return "\n".join(map(",".join, zip(*cols, strict=True))) + "\n"

    return encode_rows


def header_line(columns: list[str]) -> str:
    return ",".join(c if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", c) else csv_text(c) for c in columns) + "\n"


_FIELD = re.compile(r'"((?:[^"]|"")*)"|([^,]*)')


_INT = re.compile(r"-?[0-9]+")


def sqlite_value(bare: str) -> Any:
    """An unquoted field of a SQLite backup in its storage class: NULL, blob (``\\x`` hex), integer or real.

    Text is always quoted, so an unquoted field is never text; a real is written by
    ``repr`` and always has a ``.``, an exponent, ``inf`` or ``nan``.
    """
    if bare == "":
        return None
    if bare.startswith("\\x"):
        return bytes.fromhex(bare[2:])
    if _INT.fullmatch(bare):
        return int(bare)
    return float(bare)


def parse_record(line: str, typed: bool = False) -> list[Any]:
    """One CSV record to values: unquoted empty is None (NULL), quoted is a string.

    ``typed``: unquoted fields in their SQLite storage class (:func:`sqlite_value`).
    """
    out: list[str | None] = []
    pos, n = 0, len(line)
    while True:
        m = _FIELD.match(line, pos)
        if m is None:  # pragma: no cover - the pattern always matches
            raise ValueError("bad CSV")
        quoted, bare = m.group(1), m.group(2)
        if quoted is not None:
            out.append(quoted.replace('""', '"'))
        else:
            out.append(sqlite_value(bare) if typed else bare if bare != "" else None)
        pos = m.end()
        if pos >= n:
            break
        if line[pos] != ",":
            raise ValueError(f"unexpected character after field at {pos}")
        pos += 1
        if pos == n:
            out.append(None)
            break
    return out


def iter_records(path: str | os.PathLike[str], typed: bool = False, *, limits: ReadLimits = NO_LIMITS,
                 sha256: str | None = None) -> Iterator[list[Any]]:
    """Stream the CSV records of a backup (header first), NULL as None. Flat memory.

    ``typed``: unquoted fields after the header in their SQLite storage class (:func:`parse_record`).

    Raises BackupReadError (a ValueError) for a corrupt, truncated or non-UTF-8 file,
    BackupTooLarge for one over ``limits`` (a record longer than ``max_record`` included);
    ``sha256``: see :func:`iter_decompressed`.
    """
    pending = ""
    decoder = _utf8_decoder()
    header = True
    for chunk in iter_decompressed(path, limits=limits, sha256=sha256):
        try:
            text = pending + decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise BackupReadError(f"not UTF-8 ({exc.reason})") from None
        rec_start = pos = quotes = 0
        # A record ends at a newline preceded by an even number of quotes.
        while (nl := text.find("\n", pos)) >= 0:
            quotes += text.count('"', pos, nl)
            pos = nl + 1
            if quotes % 2 == 0:
                yield parse_record(text[rec_start:nl], typed and not header)
                header = False
                rec_start, quotes = pos, 0
        pending = text[rec_start:]
        if len(pending) > limits.max_record:
            raise BackupTooLarge(f"a CSV record is longer than {limits.max_record:,} bytes")
    if pending:
        raise BackupReadError("the CSV ends inside a record")


def _utf8_decoder() -> Any:
    return codecs.getincrementaldecoder("utf-8")("strict")
