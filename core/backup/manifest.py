"""A backup's names and its manifest: naming, building, reading, writing atomically, and THE check.

A run's data file is ``<table>_<UTC time>_<run id prefix>.csv.gz``; while the run is
under way it is written as ``….csv.gz.partial``; its manifest is ``….manifest.json``.
:func:`check_scan` is the one comparison of what a file holds with what it should hold,
used when a backup is finished, verified and restored.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from ..db import TableInfo
from ..errors import BackupMismatch
from ..models import to_jsonable, utcnow
from ..timefmt import SqliteTsFormat, as_utc, parse_db_timestamp
from .scan import Scan
from .writer import fsync_dir

FORMAT_VERSION = 2  # 2: zone-less values as stored (zone named), generated columns, SQLite storage classes
SQLITE_VALUES = ("text quoted; integer unquoted digits; real unquoted as Python repr (with '.', an exponent, "
                 "inf or nan); blob unquoted \\x hex (as PostgreSQL prints bytea); NULL an empty unquoted field")
DATA_SUFFIX = ".csv.gz"
MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_SUFFIX = ".partial"
MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few KiB; a larger one is refused unread


def manifest_path_for(data_path: str | os.PathLike[str]) -> Path:
    """The manifest beside a data file (final or partial). Raises ValueError for another name."""
    p = Path(data_path)
    name = p.name
    if name.endswith(PARTIAL_SUFFIX):
        name = name[: -len(PARTIAL_SUFFIX)]
    if not name.endswith(DATA_SUFFIX):
        raise ValueError(f"not a backup data file name: {p.name}")
    return p.with_name(name[: -len(DATA_SUFFIX)] + MANIFEST_SUFFIX)


def data_name_for(manifest_name: str) -> str:
    """The data file name a manifest describes."""
    return manifest_name[: -len(MANIFEST_SUFFIX)] + DATA_SUFFIX


def backup_names(backup_dir: Path, table: str, run_id: str, when: datetime) -> tuple[Path, Path, Path]:
    """(final data path, partial path, manifest path) for a run; unique per run id."""
    stem = f"{table}_{as_utc(when).strftime('%Y%m%dT%H%M%SZ')}_{run_id[:8]}"
    final = backup_dir / (stem + DATA_SUFFIX)
    return final, final.with_name(final.name + PARTIAL_SUFFIX), manifest_path_for(final)


def build_manifest(
    info: TableInfo,
    *,
    run_id: str,
    cutoff: datetime,
    span: tuple[datetime | None, datetime | None],
    deflate: str | None,
    sqlite_format: SqliteTsFormat | None,
    settings: Any,
) -> dict[str, Any]:
    """The manifest's fields but ``rows``, ``sha256`` and ``size_bytes`` (filled from the verified file).

    ``span``: the oldest and newest archived timestamps; ``deflate``: the library that
    compressed ("isal 1.9.1", "zlib 1.2.13"), None after a recovery; ``settings``: for the
    gzip level and the database's identity (``source``: never the URL).
    """
    return to_jsonable(
        {
            "format_version": FORMAT_VERSION,
            "run_id": run_id,
            "table": info.display_name,
            "timestamp_column": info.timestamp_column,
            "primary_key": info.manifest_key,
            "columns": [{"name": c.name, "type": c.type, "generated": c.generated} for c in info.columns],
            "timestamp_zone": info.zone,
            "cutoff": cutoff,
            "rows": None,
            "sha256": None,
            "size_bytes": None,
            "min_timestamp": span[0],
            "max_timestamp": span[1],
            "created_at": utcnow(),
            "dialect": info.dialect,
            "source": source_of(settings.database_url, info),
            "compression": {"format": "gzip", "level": settings.gzip_level, "deflate": deflate,
                            "members": "one per batch"},
            "csv": {"header": True, "null": "empty unquoted field", "encoding": "UTF-8",
                    "zone_less_values": f"as stored, without an offset; wall time in {info.zone}",
                    "blob": "\\x hex, as PostgreSQL prints bytea",
                    **({"sqlite_values": SQLITE_VALUES} if info.dialect == "sqlite" else {})},
            "sqlite_timestamp_format": sqlite_format.name if sqlite_format else None,
        }
    )


def source_of(database_url: str, info: TableInfo) -> dict[str, Any]:
    """The database's identity without secrets: dialect, server, database name, schema, table.

    Names, not OIDs; never the URL (its user, password or query). SQLite: the file's absolute path.
    """
    url = make_url(database_url)
    if info.dialect == "sqlite":
        host, port, database = None, None, str(Path(url.database or "").expanduser().resolve())
    else:
        host, port, database = url.host or url.query.get("host"), url.port, url.database
    return {"dialect": info.dialect, "host": host, "port": port, "database": database, "schema": info.schema,
            "table": info.name}


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest's JSON object, its fields checked (:func:`check_fields`).

    Refuses a symbolic link (OSError ELOOP), a file that is not regular or larger than
    MAX_MANIFEST_BYTES. Raises OSError, ValueError (not JSON, not an object, a bad field).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        raw = f.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ValueError(f"larger than {MAX_MANIFEST_BYTES:,} bytes")
    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("manifest is not a JSON object")
    check_fields(data)
    return data


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_time(v: Any) -> bool:
    return v is None or (isinstance(v, str) and parse_db_timestamp(v) is not None)


def _is_columns(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in v)


_FIELD_CHECKS: dict[str, tuple[Any, str]] = {  # field -> (check, what it must be)
    "format_version": (lambda v: _is_int(v) and v >= 1, "a whole number from 1"),
    "table": (lambda v: isinstance(v, str) and v != "", "a table name"),
    "timestamp_column": (lambda v: isinstance(v, str), "a column name"),
    "primary_key": (lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(k, str) for k in v)),
                    "a column name"),
    "columns": (_is_columns, "a list of columns with names"),
    "rows": (_is_int, "a whole number of 0 or more"),
    "sha256": (lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None, "64 hex digits"),
    "size_bytes": (lambda v: v is None or _is_int(v), "a whole number of 0 or more"),
    "cutoff": (_is_time, "an ISO 8601 time"),
    "created_at": (_is_time, "an ISO 8601 time"),
    "min_timestamp": (_is_time, "an ISO 8601 time"),
    "max_timestamp": (_is_time, "an ISO 8601 time"),
    "run_id": (lambda v: v is None or isinstance(v, str), "a text"),
    "source": (lambda v: v is None or isinstance(v, dict), "an object"),
    "signature": (lambda v: isinstance(v, str), "a hex text"),
}
_REQUIRED = ("format_version", "table", "columns", "rows", "sha256")


def check_fields(m: dict[str, Any]) -> None:
    """Raise ValueError naming the first field that is missing or of the wrong type (fields we do
    not know are left alone, so a newer manifest still reads)."""
    for name in _REQUIRED:
        if name not in m:
            raise ValueError(f"field {name!r} is missing")
    for name, (ok, what) in _FIELD_CHECKS.items():
        if name in m and not ok(m[name]):
            shown = json.dumps(m[name])[:40]
            raise ValueError(f"field {name!r} must be {what}, not {shown}")


def write_json_atomic(path: Path, payload: dict[str, Any], *, overwrite: bool = False) -> None:
    """Write JSON durably: a new temporary file, fsync, rename (or link, to never overwrite). Raises OSError.

    The temporary file has a random name and is created exclusively (``mkstemp``: ``O_EXCL``), so a
    file or symbolic link planted in the folder is never written through; the rename replaces a
    symbolic link at ``path`` itself rather than following it.
    """
    data = (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, 0o640)
            view = memoryview(data)
            while view:  # a write on a full disk can be short: never leave a cut manifest behind
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path, follow_symlinks=False)  # FileExistsError rather than overwrite
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    fsync_dir(path.parent)


def check_scan(path: str | os.PathLike[str], scan: Scan, *, rows: int | None, sha256: str | None) -> None:
    """Raise BackupMismatch unless the file read back completely with ``sha256`` and ``rows``.

    ``sha256`` None skips the hash (recovery knows only the rows the journal recorded).
    """
    if not scan.complete:
        raise BackupMismatch(str(path), "the file", "complete", scan.problem)
    if sha256 is not None and scan.sha256 != sha256:
        raise BackupMismatch(str(path), "sha256", sha256, scan.sha256)
    if scan.rows != rows:
        raise BackupMismatch(str(path), "row count", rows, scan.rows)
