"""Cutoffs and timestamps: aware UTC everywhere, and SQLite's text timestamps.

SQLite stores timestamps as text in whatever form the application wrote. A plain
``ts < ?`` comparison is correct, and uses the index, only when the cutoff is written
in the same form as the stored values. :func:`detect_sqlite_format` finds that form
and :func:`sqlite_cutoff` writes the cutoff in it; a table that mixes forms in a way
text comparison cannot order is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .checks import check_days
from .errors import BadSetting
from .i18n import N_
from .models import utcnow

_D = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
_T = "[0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
_F = ".[0-9][0-9][0-9][0-9][0-9][0-9]"


def parse_cutoff(text: str, *, setting: str = "--cutoff") -> datetime:
    """ISO 8601 to an aware UTC datetime; no offset means UTC. BadSetting if invalid."""
    raw = text.strip()
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
    except ValueError:
        raise BadSetting(setting, text, N_("is not an ISO 8601 timestamp (e.g. 2026-01-31T00:00:00Z)")) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise BadSetting(setting, text, N_("is out of range (years 1 to 9999 in UTC)")) from None


def cutoff_for_days(days: int, now: datetime | None = None, zone: str = "UTC") -> datetime:
    """now − ``days`` calendar days in ``zone`` (as PostgreSQL's ``now() - interval 'N days'``), aware UTC."""
    local = as_utc(now or utcnow()).astimezone(ZoneInfo(zone))
    return (local - timedelta(days=days)).astimezone(UTC)  # aware arithmetic is wall-clock arithmetic


def resolve_cutoff(
    *, retention_days: int | None, cutoff: datetime | str | None, default_days: int, now: datetime | None = None,
    zone: str = "UTC",
) -> datetime:
    """The cutoff from either a timestamp or a number of days (not both), days counted in ``zone``.

    A cutoff in the future is refused: it would delete rows that are not old yet.
    """
    now = now or utcnow()
    if cutoff is not None and retention_days is not None:
        raise BadSetting("--cutoff", str(cutoff), N_("give either --cutoff or --retention-days, not both"))
    if cutoff is not None:
        value = parse_cutoff(cutoff) if isinstance(cutoff, str) else as_utc(cutoff)
        if value > now:
            raise BadSetting("--cutoff", value.isoformat(), N_("is in the future: it would delete rows that are not old yet"))
        return value
    days = check_days("LOG_RETENTION_DAYS", default_days if retention_days is None else retention_days)
    return cutoff_for_days(days, now, zone)


def as_utc(value: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_db_timestamp(value: Any) -> datetime | None:
    """A timestamp as the database returned it (datetime or SQLite text) to aware UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return as_utc(value)
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        return None


@dataclass(frozen=True)
class SqliteTsFormat:
    """How a SQLite table writes its timestamps: ``YYYY-MM-DD{sep}HH:MM:SS[.ffffff]{suffix}``."""

    sep: str = " "  # " " (SQLAlchemy, sqlite datetime()) or "T" (isoformat)
    suffix: str = ""  # "", "Z" or "+00:00"
    fraction: str = "mixed"  # "always" | "never" | "mixed" (mixed only without suffix)

    @property
    def name(self) -> str:
        frac = {"always": ".ffffff", "never": "", "mixed": "[.ffffff]"}[self.fraction]
        return f"YYYY-MM-DD{self.sep}HH:MM:SS{frac}{self.suffix}"

    def globs(self) -> tuple[str, str]:
        base = f"{_D}{self.sep}{_T}"
        return base + self.suffix, base + _F + self.suffix


SQLALCHEMY_FORMAT = SqliteTsFormat(" ", "", "mixed")


def _shape(text: str) -> tuple[str, str, bool] | None:
    """(sep, suffix, has_fraction) of one stored value, or None if not understood."""
    if len(text) < 19 or text[10] not in " T":
        return None
    sep, rest = text[10], text[19:]
    frac = rest.startswith(".")
    if frac:
        if len(rest) < 7 or not rest[1:7].isdigit():
            return None
        rest = rest[7:]
    if rest not in ("", "Z", "+00:00"):
        return None
    return sep, rest, frac


FULL_CHECK_ROWS = 20_000  # the full check reads this many rowids per statement (~25 ms on 300k bench rows)


def detect_sqlite_format(conn: Any, qtable: str, qcol: str, *, full: bool, rowid: str | None = None) -> SqliteTsFormat:
    """Find the stored timestamp form of a SQLite table (``conn`` is a DB-API connection).

    With ``full`` every row is checked (a cleanup does this before deleting anything);
    without, the oldest and newest values only (index look-ups, for previews). ``rowid``
    (the table's rowid alias, core.shape.sqlite_rowid): the full check reads the table in
    rowid ranges of :data:`FULL_CHECK_ROWS`, one statement each, so its read lock never
    keeps an application's COMMIT waiting long (one statement over 300k rows held it ~200 ms).
    Raises BadSetting when values are not text timestamps in UTC of one form.
    """
    cur = conn.cursor()
    try:
        return _detect(cur, qtable, qcol, full, rowid)
    finally:
        cur.close()  # an open SQLite statement would hold a read lock


def _ranges(cur: Any, qtable: str, rowid: str | None) -> list[tuple[str, tuple[Any, ...]]]:
    """(extra condition, its arguments) for each statement of the full check: rowid ranges, or one."""
    if rowid is None:
        return [("", ())]
    cur.execute(f"SELECT min({rowid}), max({rowid}) FROM {qtable}")
    lo, hi = cur.fetchone()
    if lo is None:
        return []
    return [(f" AND {rowid} >= ? AND {rowid} < ?", (a, a + FULL_CHECK_ROWS))
            for a in range(int(lo), int(hi) + 1, FULL_CHECK_ROWS)]


def _detect(cur: Any, qtable: str, qcol: str, full: bool, rowid: str | None) -> SqliteTsFormat:
    cur.execute(f"SELECT min({qcol}), max({qcol}) FROM {qtable} WHERE {qcol} IS NOT NULL")
    lo, hi = cur.fetchone()
    if lo is None:
        return SQLALCHEMY_FORMAT
    shapes = []
    for v in (lo, hi):
        shape = _shape(v) if isinstance(v, str) else None
        if shape is None:
            raise BadSetting(
                "LOG_TIMESTAMP_COLUMN", None,
                f"holds {v!r}, not a text timestamp YYYY-MM-DD HH:MM:SS[.ffffff] in UTC; "
                "numeric or zoned SQLite timestamps are not supported",
            )
        shapes.append(shape)
    (sep, suffix, frac_lo), (sep2, suffix2, frac_hi) = shapes
    if (sep, suffix) != (sep2, suffix2):
        raise _mixed(lo, hi)
    if suffix == "":
        fmt = SqliteTsFormat(sep, suffix, "mixed")
    else:
        if frac_lo != frac_hi:
            raise _mixed(lo, hi)
        fmt = SqliteTsFormat(sep, suffix, "always" if frac_lo else "never")
    if full:
        plain, fractional = fmt.globs()
        if fmt.fraction == "always":
            cond, args = f"{qcol} GLOB ?", (fractional,)
        elif fmt.fraction == "never":
            cond, args = f"{qcol} GLOB ?", (plain,)
        else:
            cond, args = f"({qcol} GLOB ? OR {qcol} GLOB ?)", (plain, fractional)
        bad = None
        for where, bounds in _ranges(cur, qtable, rowid):
            cur.execute(
                f"SELECT {qcol} FROM {qtable} WHERE {qcol} IS NOT NULL "
                f"AND NOT (typeof({qcol}) = 'text' AND {cond}){where} LIMIT 1",
                (*args, *bounds),
            )
            bad = cur.fetchone()
            if bad is not None:
                break
        if bad is not None:
            raise BadSetting(
                "LOG_TIMESTAMP_COLUMN", None,
                f"holds {bad[0]!r}, which is not in the table's form {fmt.name}; "
                "text comparison would misplace it, so nothing is done",
            )
    return fmt


def _mixed(lo: str, hi: str) -> BadSetting:
    return BadSetting(
        "LOG_TIMESTAMP_COLUMN", None,
        f"mixes timestamp forms ({lo!r} and {hi!r}); text comparison cannot order them",
    )


def sqlite_cutoff(fmt: SqliteTsFormat, cutoff: datetime) -> str:
    """The cutoff as text that compares with stored values exactly as time does."""
    c = as_utc(cutoff)
    if fmt.fraction == "never" and c.microsecond:
        # Stored values are whole seconds: ts < c  <=>  ts < ceil(c).
        c = c.replace(microsecond=0) + timedelta(seconds=1)
    # The year by hand: strftime's %Y writes year 999 as "999", which sorts after "2026" as
    # text, so every row would compare as older than a far-past cutoff.
    text = f"{c.year:04d}-{c:%m-%d}{fmt.sep}{c:%H:%M:%S}"
    if fmt.fraction == "always" or (fmt.fraction == "mixed" and c.microsecond):
        text += f".{c.microsecond:06d}"
    return text + fmt.suffix


def sqlite_to_csv(fmt: SqliteTsFormat, value: str | None) -> str | None:
    """Stored SQLite text to the backup's form ``YYYY-MM-DD HH:MM:SS[.ffffff]+00:00``."""
    if value is None:
        return None
    if fmt.suffix and value.endswith(fmt.suffix):
        value = value[: -len(fmt.suffix)]
    if fmt.sep == "T":
        value = value.replace("T", " ", 1)
    return value + "+00:00"


def csv_to_sqlite(fmt: SqliteTsFormat, value: str) -> str:
    """A backup timestamp back into the table's stored form (textual, so exact)."""
    text = value
    for zero in ("+00:00", "+00", "Z"):
        if text.endswith(zero):
            text = text[: -len(zero)]
            break
    else:
        parsed = parse_db_timestamp(value)
        if parsed is None:
            raise ValueError(f"not a timestamp: {value!r}")
        text = parsed.strftime("%Y-%m-%d %H:%M:%S") + (f".{parsed.microsecond:06d}" if parsed.microsecond else "")
    if fmt.fraction == "always" and "." not in text[19:]:
        text += ".000000"
    if fmt.sep == "T":
        text = text[:10] + "T" + text[11:]
    return text + fmt.suffix




__all__ = [
    "SqliteTsFormat", "SQLALCHEMY_FORMAT", "as_utc", "csv_to_sqlite", "cutoff_for_days",
    "detect_sqlite_format", "parse_cutoff", "parse_db_timestamp", "resolve_cutoff",
    "sqlite_cutoff", "sqlite_to_csv",
]
