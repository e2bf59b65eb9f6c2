"""A backup's names and its manifest: naming, building, reading, writing atomically, and THE check.

A run's data file is ``<table>_<UTC time>_<run id prefix>.csv.gz``; while the run is
under way it is written as ``….csv.gz.partial``; its manifest is ``….manifest.json``.
:func:`check_scan` is the one comparison of what a file holds with what it should hold,
used when a backup is finished, verified and restored.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from ..db import TableInfo
from ..errors import BackupMismatch
from ..models import to_jsonable, utcnow
from ..timefmt import SqliteTsFormat, as_utc
from .scan import Scan
from .writer import fsync_dir

FORMAT_VERSION = 2  # 2: zone-less values as stored (zone named), generated columns, SQLite storage classes
SQLITE_VALUES = ("text quoted; integer unquoted digits; real unquoted as Python repr (with '.', an exponent, "
                 "inf or nan); blob unquoted \\x hex (as PostgreSQL prints bytea); NULL an empty unquoted field")
DATA_SUFFIX = ".csv.gz"
MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_SUFFIX = ".partial"


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
    gzip level and the masked database URL.
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
            "database": settings.database_url_masked,
            "compression": {"format": "gzip", "level": settings.gzip_level, "deflate": deflate,
                            "members": "one per batch"},
            "csv": {"header": True, "null": "empty unquoted field", "encoding": "UTF-8",
                    "zone_less_values": f"as stored, without an offset; wall time in {info.zone}",
                    "blob": "\\x hex, as PostgreSQL prints bytea",
                    **({"sqlite_values": SQLITE_VALUES} if info.dialect == "sqlite" else {})},
            "sqlite_timestamp_format": sqlite_format.name if sqlite_format else None,
        }
    )


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest's JSON object. Raises OSError, ValueError (not JSON, or not an object)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError("manifest is not a JSON object")
    return data


def write_json_atomic(path: Path, payload: dict[str, Any], *, overwrite: bool = False) -> None:
    """Write JSON durably: temp file, fsync, rename (or link, to never overwrite). Raises OSError."""
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
