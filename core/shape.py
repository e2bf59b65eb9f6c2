"""Table shapes: the zone of zone-less timestamps, the one cutoff predicate, and keys of any btree type.

Every caller that selects old rows (preview, run, stats, dashboard) builds its comparison
with :func:`older_than`, so their counts agree. A ``timestamp without time zone`` or
``date`` column is compared with the cutoff's wall time in the table's zone
(``LOG_TIMESTAMP_TIMEZONE``; on PostgreSQL by default the database's own ``TimeZone``),
which is what PostgreSQL itself does for ``col < now() - interval 'N days'``.

Batches walk the primary key, whatever its type (uuid, text, numeric, timestamps) or
width: a composite key is compared as a row value, ``(a, b) > (%s, %s)``. SQLite rowid
tables walk the rowid instead, so a TEXT key holding NULLs is archived like any other row.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import sqltypes

from .config import Settings
from .db import TableInfo
from .errors import BadSetting, PermissionDenied
from .i18n import N_
from .timefmt import SqliteTsFormat, as_utc, parse_db_timestamp, sqlite_cutoff

ZONE_SETTING = "LOG_TIMESTAMP_TIMEZONE"


def column_flags(column: dict[str, Any]) -> dict[str, bool]:
    """The ColumnInfo flags read from one SQLAlchemy inspector column."""
    t = column["type"]
    return {
        "is_date": isinstance(t, sqltypes.Date) and not isinstance(t, sqltypes.DateTime),
        "generated": bool(column.get("computed")),
    }


def table_zone(settings: Settings, engine: Engine) -> str:
    """LOG_TIMESTAMP_TIMEZONE, else the database's TimeZone as a fresh session sees it (SQLite: UTC).

    ``reset_val`` is the session's starting value (database, role and client defaults),
    whatever a ``SET TIME ZONE`` of this session did since.
    """
    zone = settings.timestamp_timezone
    if zone is None and engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            zone = conn.exec_driver_sql("SELECT reset_val FROM pg_settings WHERE name = 'TimeZone'").scalar()
    zone = zone or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadSetting(ZONE_SETTING, zone, "the database's TimeZone is not an IANA zone name; "
                         "set LOG_TIMESTAMP_TIMEZONE (e.g. Asia/Seoul)") from None
    return zone


def sqlite_rowid(engine: Engine, qtable: str, names: list[str]) -> str | None:
    """The rowid alias batches walk on a SQLite rowid table; None for WITHOUT ROWID tables and PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return None
    alias = next((a for a in ("rowid", "_rowid_", "oid") if a not in {n.lower() for n in names}), None)
    if alias is None:
        return None
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT {alias} FROM {qtable} LIMIT 0")
    except SQLAlchemyError:  # WITHOUT ROWID: the key is NOT NULL there
        return None
    return alias


def check_can_clean(engine: Engine, info: TableInfo) -> None:
    """PermissionDenied (one line naming the privilege) unless this role may SELECT and DELETE the table.

    Checked before anything is written; a role allowed only to read can still preview,
    count, list backups and history, and dry-run.
    """
    if engine.dialect.name != "postgresql":
        return
    table = ".".join(f'"{p}"' for p in (info.schema, info.name) if p)
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT current_user, has_table_privilege(CAST(%(t)s AS regclass), 'SELECT'), "
            "has_table_privilege(CAST(%(t)s AS regclass), 'DELETE')", {"t": table}).one()
    missing = [p for p, ok in zip(("SELECT", "DELETE"), row[1:], strict=True) if not ok]
    if missing:
        raise PermissionDenied(N_("role {role} lacks the {privileges} privilege on {table} that a cleanup needs "
                                  "(GRANT {grant} ON {table} TO {user})"), role=repr(row[0]),
                               privileges=" and ".join(missing), table=info.display_name,
                               grant=", ".join(missing), user=row[0])


# ---------------------------------------------------------------------------
# Cutoffs


def wall_time(value: datetime, zone: str) -> datetime:
    """The naive wall time of an instant in ``zone``."""
    return as_utc(value).astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def cutoff_value(info: TableInfo, cutoff: datetime, fmt: SqliteTsFormat | None = None) -> Any:
    """The bind value for ``ts < value``: an instant for zoned columns, the zone's wall time otherwise.

    A ``date`` column compares with the naive wall time too: PostgreSQL promotes the date
    to midnight of that day, so ``d < '2026-01-31 09:00'`` keeps 2026-01-31 and deletes the 30th.
    """
    if info.dialect == "sqlite":
        fmt = fmt or SqliteTsFormat()
        if fmt.suffix:  # the stored text says UTC itself
            return sqlite_cutoff(fmt, cutoff)
        return sqlite_cutoff(fmt, wall_time(cutoff, info.zone).replace(tzinfo=UTC))
    col = info.ts_info
    if col.naive_timestamp or col.is_date:
        return wall_time(cutoff, info.zone)
    return as_utc(cutoff)


def older_than(info: TableInfo, ts_sql: str, placeholder: str, cutoff: datetime,
               fmt: SqliteTsFormat | None = None) -> tuple[str, Any]:
    """THE predicate of an old row, and its one bind value: ``(sql, value)``."""
    return f"{ts_sql} < {placeholder}", cutoff_value(info, cutoff, fmt)


def ts_to_utc(info: TableInfo, value: Any) -> datetime | None:
    """A timestamp of the table's column, as the database returned it, to aware UTC (zone-less: in the table's zone)."""
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return parse_db_timestamp(value)
        value = parsed
    if isinstance(value, datetime) and value.tzinfo is None:
        try:
            return value.replace(tzinfo=ZoneInfo(info.zone)).astimezone(UTC)
        except OverflowError:  # year 1 east of UTC
            return value.replace(tzinfo=UTC)
    return parse_db_timestamp(value)


# ---------------------------------------------------------------------------
# Keys


def walk_columns(info: TableInfo, q: Any) -> list[str]:
    """The SQL expressions batches order and cut by: the rowid on SQLite rowid tables, else the key columns."""
    if info.rowid:
        return [info.rowid]
    return [q(c) for c in info.key]


def key_compare(cols: list[str], op: str, value: Any, placeholder: str) -> tuple[str, list[Any]]:
    """``k op value`` for one column, ``(a, b) op (x, y)`` (row-value order) for several."""
    if len(cols) == 1:
        return f"{cols[0]} {op} {placeholder}", [value]
    return f"({', '.join(cols)}) {op} ({', '.join([placeholder] * len(cols))})", list(value)


def order_by(cols: list[str], desc: bool = False) -> str:
    return ", ".join(f"{c} DESC" if desc else c for c in cols)


def key_of(row: Any, width: int) -> Any:
    """The walk key from the first ``width`` values of a row: a value, or a tuple for several."""
    return row[0] if width == 1 else tuple(row[:width])


def key_text(value: Any) -> str | None:
    """The journal's form of a key: text, or a JSON list for a composite key."""
    if value is None:
        return None
    if isinstance(value, tuple):
        return json.dumps([v if isinstance(v, (int, float, str)) or v is None else str(v) for v in value])
    return str(value)


def next_batch_sql(info: TableInfo, q: Any, table: str, where: str) -> str:
    """The batch's last key, row count and time span in one pass over the next ``LIMIT`` old rows.

    ``ORDER BY … DESC LIMIT 1`` rather than ``max()``, which uuid and row values lack.
    """
    cols = walk_columns(info, q)
    ks = [f"k{i}" for i in range(len(cols))]
    inner = ", ".join(f"{c} AS {k}" for c, k in zip(cols, ks, strict=True))
    return (f"SELECT {', '.join(ks)}, count(*) OVER (), min(t) OVER (), max(t) OVER () FROM "
            f"(SELECT {inner}, {q(info.timestamp_column)} AS t FROM {table} WHERE {where} "
            f"ORDER BY {order_by(cols)} LIMIT {{limit}}) AS b ORDER BY {order_by(ks, desc=True)} LIMIT 1")


__all__ = ["check_can_clean", "column_flags", "cutoff_value", "key_compare", "key_of", "key_text",
           "next_batch_sql", "older_than", "order_by", "sqlite_rowid", "table_zone", "ts_to_utc", "walk_columns",
           "wall_time"]
