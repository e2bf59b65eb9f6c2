"""Days of a time zone: where they start, how SQL groups rows into them, and folding spans into them.

The Overview's rows-per-day histogram counts days of the display zone (DISPLAY_TIMEZONE
or a session's choice), not UTC days: a row written at 20:00 UTC on 5 January is on
6 January in Seoul. PostgreSQL knows the zones itself (``AT TIME ZONE``, the zone bound
as a parameter). SQLite has no zone database, so the span of the data is cut into
periods in which the display zone's offset from the stored values is constant, and SQL
shifts each row's stored text by its period's offset (``date(ts, '+32400 seconds')``):
exact to the second for every IANA zone (half-hour, 45-minute and historical offsets,
DST), grouped in SQL so memory does not grow with the table. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from .db import TableInfo
from .timefmt import as_utc

# The tz database never changes one zone's offset twice within about four days (the
# shortest gap, Africa/Freetown 1939, is 95 hours); a daily scan therefore sees every
# change, and bisection finds its second.
_SCAN = 86_400


def day_start(day: date, zone: str) -> datetime:
    """The first instant of ``day`` in ``zone``, aware UTC.

    Midnight itself where it exists; where a transition skips it (DST starting at 00:00)
    the transition instant, which is the day's first moment (zoneinfo reads a skipped wall
    time with the offset before the gap); an ambiguous midnight is its earlier occurrence.
    """
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def local_day(value: datetime, zone: str) -> date:
    """The day of ``zone`` an instant falls on (naive values are taken as UTC)."""
    return as_utc(value).astimezone(ZoneInfo(zone)).date()


def _offset(zone: ZoneInfo, seconds: int) -> int:
    return int(datetime.fromtimestamp(seconds, zone).utcoffset().total_seconds())  # type: ignore[union-attr]


def _changes(zone: ZoneInfo, lo: int, hi: int) -> list[int]:
    """The instants (epoch seconds) in (lo, hi] at which ``zone``'s UTC offset changes."""
    out = []
    start, before = lo, _offset(zone, lo)
    while start < hi:
        end = min(start + _SCAN, hi)
        if _offset(zone, end) != before:
            a, b = start, end  # offset(a) == before != offset(b): the change is in (a, b]
            while b - a > 1:
                mid = (a + b) // 2
                a, b = (mid, b) if _offset(zone, mid) == before else (a, mid)
            out.append(b)
            before = _offset(zone, b)
            start = b
        else:
            start = end
    return out


def offset_periods(lo: datetime, hi: datetime, *, display: str, stored: str = "UTC") -> list[tuple[datetime, int]]:
    """``[(from, seconds), …]``, oldest first, covering [lo, hi]: from each instant on (the first
    entry's from is ``lo``) a wall time of ``stored`` plus ``seconds`` is the wall time of ``display``.

    One entry when neither zone changes its offset in the span (UTC to Asia/Seoul: +32400).
    """
    zd, zs = ZoneInfo(display), ZoneInfo(stored)
    a, b = math.floor(as_utc(lo).timestamp()), math.ceil(as_utc(hi).timestamp())

    def shift(t: int) -> int:
        return _offset(zd, t) - _offset(zs, t)

    periods = [(as_utc(lo), shift(a))]
    for t in sorted(set(_changes(zd, a, b)) | set(_changes(zs, a, b))):
        if shift(t) != periods[-1][1]:
            periods.append((datetime.fromtimestamp(t, UTC), shift(t)))
    return periods


def day_zone(info: TableInfo, zone: str) -> str:
    """The zone whose days a table's rows are counted in: ``zone``, but a ``date`` column's own
    days are days of the table's zone (a date has no time of day to move into another zone)."""
    return info.zone if info.ts_info.is_date else zone


def pg_day_sql(info: TableInfo, ts: str, zone: str) -> tuple[str, dict[str, str]]:
    """PostgreSQL: the day of ``day_zone(info, zone)`` a value of the quoted column ``ts`` falls on,
    as ``(sql, parameters)``; zone names are bound (``:lrc_tz``, ``:lrc_zone``), never spliced in.

    A zone-less ``timestamp`` means the table's zone (LOG_TIMESTAMP_TIMEZONE): it is first
    read in that zone, then moved to ``zone``.
    """
    col = info.ts_info
    if col.is_date:
        return f"({ts})::date", {}
    if col.naive_timestamp:
        return f"(({ts} AT TIME ZONE :lrc_tz) AT TIME ZONE :lrc_zone)::date", {"lrc_tz": info.zone, "lrc_zone": zone}
    return f"({ts} AT TIME ZONE :lrc_zone)::date", {"lrc_zone": zone}


def fold_days(pieces: Iterable[tuple[datetime, datetime, float]], zone: str) -> dict[date, float]:
    """Rows spread evenly over spans ``(from, to, rows)`` (from == to: all at one instant), added up
    per day of ``zone``."""
    days: dict[date, float] = defaultdict(float)
    for a, b, n in pieces:
        d = local_day(a, zone)
        if a == b:
            days[d] += n
            continue
        width = (b - a).total_seconds()
        while True:
            start, end = day_start(d, zone), day_start(d + timedelta(days=1), zone)
            overlap = (min(b, end) - max(a, start)).total_seconds()
            days[d] += n * max(0.0, overlap) / width
            if end >= b:
                break
            d += timedelta(days=1)
    return days


__all__ = ["day_start", "day_zone", "fold_days", "local_day", "offset_periods", "pg_day_sql"]
