"""Counts by age and cutoff previews, from SQL aggregates only (never loads the table)."""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from . import fast_stats, zonedays
from .calibration import bytes_per_row
from .checks import check_zone
from .config import Settings
from .db import TableInfo, check_connection, describe_table, index_warning, qualified, quote
from .dependents import skip_referenced_sql, table_dependents
from .i18n import N_
from .models import BucketCount, DayCount, Preview, Stats, utcnow
from .partition_layout import plan_partitions
from .shape import cutoff_value, ts_to_utc
from .timefmt import as_utc, cutoff_for_days, detect_sqlite_format, resolve_cutoff

log = logging.getLogger(__name__)

# Labels are JSON values (stable English); front ends translate them with i18n._ when shown.
BUCKETS = ((0, 7, N_("< 7 days")), (7, 30, N_("7–30 days")), (30, 90, N_("30–90 days")), (90, None, N_("> 90 days")))


class _Q:
    """Quoted names and a timestamp-parameter maker for one table."""

    def __init__(self, engine: Engine, conn: Connection, info: TableInfo, *, full_check: bool = False) -> None:
        self.info = info
        self.table = qualified(engine, info.schema, info.name)
        self.ts = quote(engine, info.timestamp_column)
        self.fmt = None
        if info.dialect == "sqlite":
            self.fmt = detect_sqlite_format(conn.connection.driver_connection, self.table, self.ts, full=full_check)

    def bound(self, value: datetime) -> Any:
        """A timestamp as a bind value that compares with the column as ``ts < value`` (core.shape)."""
        return cutoff_value(self.info, value, self.fmt)


def _context(settings: Settings, engine: Engine | None, info: TableInfo | None) -> tuple[Engine, TableInfo]:
    engine = engine or check_connection(settings)
    return engine, info or describe_table(settings, engine)


def preview(
    settings: Settings,
    *,
    cutoff: datetime | str | None = None,
    retention_days: int | None = None,
    engine: Engine | None = None,
    info: TableInfo | None = None,
) -> Preview:
    """How many rows a cleanup would archive and delete now, and their time span. Read-only.

    Rows still referenced through RESTRICT / NO ACTION are counted apart (``rows_skipped``),
    with the batches' own predicate; a cleanup that would be refused (dependent rows,
    delete triggers) says so in ``refusal`` and the warnings, as does row-level security.
    """
    resolve_cutoff(retention_days=retention_days, cutoff=cutoff, default_days=settings.retention_days)  # checks
    engine, info = _context(settings, engine, info)
    the_cutoff = resolve_cutoff(retention_days=retention_days, cutoff=cutoff, default_days=settings.retention_days,
                                zone=info.zone)
    deps = table_dependents(engine, info)
    with engine.connect() as conn:
        q = _Q(engine, conn, info)
        skip = skip_referenced_sql(deps, table=q.table, quote=lambda name: quote(engine, name))
        old = f"{q.ts} < :c"
        # partitioned (and nothing to skip): the exact count per partition is the count (one pass);
        # min/max are index probes
        parts = plan_partitions(conn, info, q.table, the_cutoff) if info.dialect == "postgresql" and not skip else ()
        span = f"min({q.ts}), max({q.ts}) FROM {q.table} WHERE {old}{' AND ' + skip if skip else ''}"
        if parts:
            n = sum(x.rows for x in parts)
            lo, hi = conn.execute(text(f"SELECT {span}"), {"c": q.bound(the_cutoff)}).one()
        else:
            n, lo, hi = conn.execute(text(f"SELECT count(*), {span}"), {"c": q.bound(the_cutoff)}).one()
        skipped = conn.execute(text(f"SELECT count(*) FROM {q.table} WHERE {old} AND NOT ({skip})"),
                               {"c": q.bound(the_cutoff)}).scalar_one() if skip else 0
        total = conn.execute(text(f"SELECT count(*) FROM {q.table}")).scalar_one()
    allow = settings.allow_delete_triggers
    warnings = tuple(w for w in (index_warning(info),) if w) + deps.warnings(allow_delete_triggers=allow)
    return Preview(info.display_name, the_cutoff, int(n), int(total), ts_to_utc(info, lo),
                   ts_to_utc(info, hi), warnings, rows_skipped=int(skipped),
                   refusal=deps.refusal(allow_delete_triggers=allow), partitions=parts)


def preview_sample(
    settings: Settings, *, cutoff: datetime, limit: int = 10, max_chars: int = 120,
    engine: Engine | None = None, info: TableInfo | None = None,
) -> list[dict[str, Any]]:
    """The oldest ``limit`` affected rows, long text shortened to ``max_chars``; the timestamp column as aware
    UTC (a zone-less column read in the table's zone), so a page can show it in the display zone. Read-only."""
    engine, info = _context(settings, engine, info)
    limit = max(1, min(int(limit), 100))
    with engine.connect() as conn:
        q = _Q(engine, conn, info)
        rows = conn.execute(
            text(f"SELECT * FROM {q.table} WHERE {q.ts} < :c ORDER BY {q.ts} LIMIT :n"),
            {"c": q.bound(cutoff), "n": limit},
        ).mappings().all()
    out = []
    for r in rows:
        item = {}
        for k, v in r.items():
            if k == info.timestamp_column:
                v = ts_to_utc(info, v)
            elif isinstance(v, (dict, list)):
                v = str(v)
            if isinstance(v, str) and len(v) > max_chars:
                v = v[: max_chars - 1] + "…"
            item[k] = v
        out.append(item)
    return out


def estimate_backup_bytes(
    settings: Settings, *, rows: int, engine: Engine | None = None, info: TableInfo | None = None,
    sample: int = 500,
) -> int:
    """Size of the compressed backup of ``rows`` rows: from past backups' bytes per row when there
    are any (core.calibration), else from a sample's text length. Read-only."""
    if rows <= 0:
        return 0
    engine, info = _context(settings, engine, info)
    per_row = bytes_per_row(settings, engine)
    if per_row is not None:
        return int(per_row * rows)
    with engine.connect() as conn:
        q = _Q(engine, conn, info)
        cols = [quote(engine, c) for c in info.column_names]
        if info.dialect == "postgresql":
            expr = " + ".join(f"coalesce(octet_length({c}::text), 0)" for c in cols)
        else:
            expr = " + ".join(f"coalesce(length(CAST({c} AS BLOB)), 0)" for c in cols)
        avg = conn.execute(
            text(f"SELECT avg(w) FROM (SELECT {expr} AS w FROM {q.table} ORDER BY {q.ts} LIMIT :n) s"),
            {"n": sample},
        ).scalar()
    raw = (float(avg or 0) + 3 * len(cols)) * rows
    ratio = 0.30 if settings.gzip_level <= 3 else 0.27  # measured on chat text (docs/benchmarks.md)
    return int(raw * ratio)


def stats(settings: Settings, *, now: datetime | None = None, engine: Engine | None = None,
          info: TableInfo | None = None, zone: str = "UTC") -> Stats:
    """Total, oldest, newest, counts per age bucket and per day of ``zone`` (an IANA name: the
    dashboard passes its display zone; a ``date`` column keeps its own dates); table size on
    PostgreSQL. Read-only. Raises BadSetting for a zone that is not one."""
    check_zone("DISPLAY_TIMEZONE", zone)
    engine, info = _context(settings, engine, info)
    now = as_utc(now or utcnow())
    with engine.connect() as conn:
        q = _Q(engine, conn, info)
        if info.dialect == "postgresql" and fast_stats.estimated_rows(conn, q.table) > fast_stats.EXACT_UP_TO:
            return _estimated_stats(conn, q, info, now, zone)
        # one scan: each row counted in the bucket its age falls into; :b<i> is bucket i's lower age bound
        params = {f"b{i}": q.bound(cutoff_for_days(lo, now, info.zone)) for i, (lo, _hi, _label) in enumerate(BUCKETS) if lo}
        starts = {lo: i for i, (lo, _hi, _label) in enumerate(BUCKETS)}
        exprs = []
        for i, (lo, hi, _label) in enumerate(BUCKETS):
            cond = ([f"{q.ts} < :b{i}"] if lo else []) + ([f"{q.ts} >= :b{starts[hi]}"] if hi is not None else [])
            exprs.append(f"count(*) FILTER (WHERE {' AND '.join(cond) or 'true'})" if info.dialect == "postgresql"
                         else f"sum(CASE WHEN {' AND '.join(cond) or '1'} THEN 1 ELSE 0 END)")
        row = conn.execute(
            text(f"SELECT count(*), min({q.ts}), max({q.ts}), {', '.join(exprs)} FROM {q.table}"), params
        ).one()
        total, lo_ts, hi_ts, *counts = row
        day, day_params = _day_sql(q, zone, lo_ts, hi_ts)
        per_day = conn.execute(  # grouped in SQL: one row per day, whatever the table's size
            text(f"SELECT {day} AS d, count(*) FROM {q.table} WHERE {q.ts} IS NOT NULL GROUP BY 1 ORDER BY 1"),
            day_params,
        ).all() if total else []
        size = None
        if info.dialect == "postgresql":
            size = conn.execute(text("SELECT pg_total_relation_size(CAST(:t AS regclass))"),
                                {"t": q.table}).scalar()
    # a SQLite value date() cannot read has no day (NULL); it still counts in the total
    days = tuple(DayCount(d if isinstance(d, date) else date.fromisoformat(str(d)), int(n)) for d, n in per_day
                 if d is not None)
    buckets = tuple(BucketCount(label, lo, hi, int(c or 0)) for (lo, hi, label), c in zip(BUCKETS, counts, strict=True))
    warnings = tuple(w for w in (index_warning(info),) if w)
    return Stats(info.display_name, int(total), ts_to_utc(info, lo_ts), ts_to_utc(info, hi_ts), buckets,
                 days, int(size) if size is not None else None, now, warnings)


def _day_sql(q: _Q, zone: str, lo: Any, hi: Any) -> tuple[str, dict[str, Any]]:
    """The SQL of a row's day of ``zone`` (core.zonedays) and its parameters; ``lo``/``hi`` are the
    column's min and max as stored (SQLite: the span whose offset periods the expression covers)."""
    if q.info.dialect == "postgresql":
        return zonedays.pg_day_sql(q.info, q.ts, zone)
    # Stored text with a suffix says UTC itself; without one it is wall time of the table's zone.
    stored = "UTC" if q.fmt and q.fmt.suffix else q.info.zone
    first, last = ts_to_utc(q.info, lo), ts_to_utc(q.info, hi)
    periods = zonedays.offset_periods(first, last, display=zone, stored=stored) if first and last else [(None, 0)]

    def shifted(i: int) -> str:  # to the second: fraction and suffix dropped (offsets are whole seconds)
        return f"date(substr({q.ts}, 1, 19), :lrc_m{i})"

    params: dict[str, Any] = {}
    whens = []
    for i, (start, seconds) in reversed(list(enumerate(periods))):  # newest first: most rows are recent
        params[f"lrc_m{i}"] = f"{seconds:+d} seconds"
        if i:  # the period's first instant in the stored form: the cleanup's own comparison
            params[f"lrc_p{i}"] = q.bound(start)
            whens.append(f"WHEN {q.ts} >= :lrc_p{i} THEN {shifted(i)}")
    last_shift = shifted(0)
    return (f"CASE {' '.join(whens)} ELSE {last_shift} END" if whens else last_shift), params


def _estimated_stats(conn: Connection, q: _Q, info: TableInfo, now: datetime, zone: str) -> Stats:
    """A large PostgreSQL table: planner estimates (labelled), exact oldest/newest. Read-only."""
    total, buckets, days = fast_stats.estimate(conn, info, q.table, now=now, buckets=BUCKETS, zone=zone)
    lo_ts, hi_ts = fast_stats.exact_span(conn, info, q.table)
    size = conn.execute(text(f"SELECT sum(pg_total_relation_size(relid)) FROM {fast_stats.LEAVES} p"),
                        {"t": q.table}).scalar()
    warnings = tuple(w for w in (index_warning(info),) if w)
    return Stats(info.display_name, total, ts_to_utc(info, lo_ts), ts_to_utc(info, hi_ts), buckets, days,
                 int(size) if size is not None else None, now, warnings, estimated=True)
