"""Counts of a large PostgreSQL table without scanning it: the planner's statistics.

For each leaf relation (each partition, or the table itself) PostgreSQL keeps its row
count (``pg_class.reltuples``) and a histogram of the timestamp column (``pg_stats``),
both refreshed by (auto)ANALYZE. Spreading each histogram bucket's share of the rows
evenly over its time span gives the age buckets and the per-day histogram (days of the
zone asked for, core.zonedays) in a few milliseconds whatever the size. These numbers are
estimates and are labelled so (``Stats.estimated``); the oldest and newest timestamps stay
exact (two index probes).
A relation never analyzed is counted exactly. Reads only; writes nothing, so a
read-only role sees the same page (no cache table).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from .db import TableInfo, quote
from .models import BucketCount, DayCount
from .shape import ts_to_utc
from .zonedays import day_start, day_zone, fold_days, pg_day_sql

EXACT_UP_TO = 200_000  # tables estimated at or below this many rows are counted exactly

# The leaf relations holding the rows: the partitions, or the table itself when it is not partitioned.
LEAVES = ("(SELECT relid FROM pg_partition_tree(CAST(:t AS regclass)) WHERE isleaf UNION ALL "
          "SELECT CAST(:t AS regclass) WHERE (SELECT relkind FROM pg_class WHERE oid = CAST(:t AS regclass)) <> 'p')")

_LEAVES = text(
    "SELECT n.nspname, c.relname, c.reltuples::bigint, s.null_frac, s.histogram_bounds::text, "
    "s.most_common_vals::text, s.most_common_freqs "
    f"FROM {LEAVES} p JOIN pg_class c ON c.oid = p.relid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = :col "
    "AND NOT s.inherited"
)


def estimated_rows(conn: Connection, table: str) -> int:
    """The planner's row count of the table's analyzed parts (a part never analyzed, -1, counts 0)."""
    return int(conn.execute(text(f"SELECT sum(greatest(c.reltuples, 0))::bigint FROM {LEAVES} p "
                                 "JOIN pg_class c ON c.oid = p.relid"), {"t": table}).scalar() or 0)


def _array(value: str | None) -> list[str]:
    """A pg_stats array printed as text ('{"2024-01-01 00:00:00+00",…}') to its elements."""
    if not value:
        return []
    return [v.strip().strip('"') for v in value.strip("{}").split(",") if v.strip()]


def _mass(conn: Connection, info: TableInfo, table: str, zone: str) -> list[tuple[datetime, datetime, float]]:
    """(from, to, rows) pieces covering every leaf: histogram buckets, most common values, exact
    counts per day of ``zone`` of leaves without statistics."""
    pieces: list[tuple[datetime, datetime, float]] = []
    ts = quote(conn.engine, info.timestamp_column)
    for schema, name, tuples, null_frac, hist, mcv, mcf in conn.execute(
            _LEAVES, {"t": table, "col": info.timestamp_column}).all():
        # instants: a zone-less column's values are wall times of the table's zone
        bounds = [t for t in (ts_to_utc(info, v) for v in _array(hist)) if t]
        if tuples < 0 or (tuples > 0 and len(bounds) < 2 and not mcv):  # never analyzed: count it
            leaf = f"{quote(conn.engine, schema)}.{quote(conn.engine, name)}"
            day, params = pg_day_sql(info, ts, zone)
            for d, n in conn.execute(text(f"SELECT {day}, count(*) FROM {leaf} WHERE {ts} IS NOT NULL GROUP BY 1"),
                                     params):
                # counted per day of the chart's zone: the piece folds back into exactly that day
                pieces.append((day_start(d, day_zone(info, zone)), day_start(d + timedelta(days=1),
                                                                           day_zone(info, zone)), float(n)))
            continue
        common = 0.0
        for v, f in zip(_array(mcv), mcf or [], strict=False):
            t = ts_to_utc(info, v)
            if t:
                pieces.append((t, t, tuples * f))
                common += f
        if len(bounds) >= 2:
            share = tuples * max(0.0, 1.0 - (null_frac or 0.0) - common) / (len(bounds) - 1)
            pieces += [(a, b, share) for a, b in zip(bounds, bounds[1:], strict=False)]
    return pieces


def _between(piece: tuple[datetime, datetime, float], lo: datetime | None, hi: datetime | None) -> float:
    """The rows of ``piece`` with a time in [lo, hi), assuming them spread evenly over its span."""
    a, b, n = piece
    if a == b:
        return n if (lo is None or a >= lo) and (hi is None or a < hi) else 0.0
    start, end = max(a, lo) if lo else a, min(b, hi) if hi else b
    return n * max(0.0, (end - start).total_seconds()) / (b - a).total_seconds()


def estimate(conn: Connection, info: TableInfo, table: str, *, now: datetime,
             buckets: tuple[tuple[int, int | None, str], ...], zone: str = "UTC") -> tuple[
                 int, tuple[BucketCount, ...], tuple[DayCount, ...]]:
    """(total, age buckets, per-day counts), estimated from the planner's statistics; the days are days
    of ``zone`` (a ``date`` column's: its own), each histogram bucket's rows spread evenly over its span."""
    pieces = _mass(conn, info, table, zone)
    total = round(sum(n for _a, _b, n in pieces))
    out = []
    for lo, hi, label in buckets:
        newer = now - timedelta(days=lo) if lo else None
        older = now - timedelta(days=hi) if hi is not None else None
        out.append(BucketCount(label, lo, hi, round(sum(_between(p, older, newer) for p in pieces))))
    days = fold_days(pieces, day_zone(info, zone))
    per_day = tuple(DayCount(d, round(n)) for d, n in sorted(days.items()) if round(n) > 0)
    return total, tuple(out), per_day


def exact_span(conn: Connection, info: TableInfo, table: str) -> tuple[Any, Any]:
    """Oldest and newest timestamps (index probes when the column is indexed)."""
    ts = quote(conn.engine, info.timestamp_column)
    return conn.execute(text(f"SELECT min({ts}), max({ts}) FROM {table}")).one()
