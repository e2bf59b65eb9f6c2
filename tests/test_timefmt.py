"""core.timefmt: cutoffs as aware UTC datetimes, and SQLite's text timestamps."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import pytest

from core.errors import BadSetting
from core.timefmt import (
    SQLALCHEMY_FORMAT,
    SqliteTsFormat,
    csv_to_sqlite,
    cutoff_for_days,
    detect_sqlite_format,
    parse_cutoff,
    parse_db_timestamp,
    resolve_cutoff,
    sqlite_cutoff,
    sqlite_to_csv,
)

NOW = datetime(2026, 1, 31, 12, 0, 0, tzinfo=UTC)

# ---------------------------------------------------------------------------
# Cutoffs


@pytest.mark.parametrize("text, expected", [
    ("2026-01-31T00:00:00Z", datetime(2026, 1, 31, tzinfo=UTC)),
    ("2026-01-31T00:00:00+00:00", datetime(2026, 1, 31, tzinfo=UTC)),
    ("2026-01-31T09:00:00+09:00", datetime(2026, 1, 31, tzinfo=UTC)),
    ("2026-01-30T19:00:00-05:00", datetime(2026, 1, 31, tzinfo=UTC)),
    ("2026-01-31 00:00:00", datetime(2026, 1, 31, tzinfo=UTC)),
    ("2026-01-31", datetime(2026, 1, 31, tzinfo=UTC)),
    ("  2026-01-31T00:00:00.250000Z ", datetime(2026, 1, 31, 0, 0, 0, 250000, tzinfo=UTC)),
])
def test_parse_cutoff_gives_aware_utc(text: str, expected: datetime):
    value = parse_cutoff(text)
    assert value == expected
    assert value.utcoffset() == timedelta(0)


def test_a_cutoff_without_offset_is_utc():
    assert parse_cutoff("2026-01-31T08:30:00") == datetime(2026, 1, 31, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "", "31/01/2026", "now"])
def test_parse_cutoff_refuses_what_is_not_iso_8601(text: str):
    with pytest.raises(BadSetting) as exc:
        parse_cutoff(text, setting="--cutoff")
    assert exc.value.name == "--cutoff" and "ISO 8601" in exc.value.why


def test_parse_cutoff_refuses_a_time_before_year_1_in_utc():
    with pytest.raises(BadSetting, match="out of range"):
        parse_cutoff("0001-01-01T00:00:00+14:00")


def test_cutoff_for_days_counts_back_from_now():
    assert cutoff_for_days(30, NOW) == NOW - timedelta(days=30)
    assert cutoff_for_days(0, NOW) == NOW


def test_resolve_cutoff_from_days_and_from_a_timestamp():
    assert resolve_cutoff(retention_days=None, cutoff=None, default_days=30, now=NOW) == NOW - timedelta(days=30)
    assert resolve_cutoff(retention_days=7, cutoff=None, default_days=30, now=NOW) == NOW - timedelta(days=7)
    assert resolve_cutoff(retention_days=None, cutoff="2026-01-01T00:00:00Z", default_days=30,
                          now=NOW) == datetime(2026, 1, 1, tzinfo=UTC)
    naive = datetime(2026, 1, 1)
    assert resolve_cutoff(retention_days=None, cutoff=naive, default_days=30, now=NOW) == naive.replace(tzinfo=UTC)
    seoul = datetime(2026, 1, 1, 9, tzinfo=timezone(timedelta(hours=9)))
    assert resolve_cutoff(retention_days=None, cutoff=seoul, default_days=30, now=NOW) == datetime(2026, 1, 1,
                                                                                                   tzinfo=UTC)


def test_resolve_cutoff_refuses_both_a_cutoff_and_days():
    with pytest.raises(BadSetting, match="not both"):
        resolve_cutoff(retention_days=3, cutoff="2026-01-01", default_days=30, now=NOW)


def test_resolve_cutoff_refuses_the_future():
    with pytest.raises(BadSetting, match="in the future"):
        resolve_cutoff(retention_days=None, cutoff=NOW + timedelta(seconds=1), default_days=30, now=NOW)


@pytest.mark.parametrize("days", [-1, True, 2.5, "30"])
def test_resolve_cutoff_refuses_days_that_are_not_a_count(days):
    with pytest.raises(BadSetting) as exc:
        resolve_cutoff(retention_days=days, cutoff=None, default_days=30, now=NOW)
    assert exc.value.name == "LOG_RETENTION_DAYS"


def test_resolve_cutoff_refuses_more_than_100_years_of_days():
    assert resolve_cutoff(retention_days=36_500, cutoff=None, default_days=30, now=NOW).year == NOW.year - 100
    for days in (36_501, 10**6):
        with pytest.raises(BadSetting, match="at most 36,500 days"):
            resolve_cutoff(retention_days=days, cutoff=None, default_days=30, now=NOW)


@pytest.mark.parametrize("value, expected", [
    (None, None),
    (datetime(2026, 1, 31, 12), datetime(2026, 1, 31, 12, tzinfo=UTC)),
    ("2026-01-31 12:00:00", datetime(2026, 1, 31, 12, tzinfo=UTC)),
    ("2026-01-31T12:00:00Z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
    ("2026-01-31 21:00:00+09:00", datetime(2026, 1, 31, 12, tzinfo=UTC)),
    ("not a time", None),
])
def test_parse_db_timestamp(value, expected):
    assert parse_db_timestamp(value) == expected


# ---------------------------------------------------------------------------
# SQLite text timestamps


def _table(*values: str | int | None) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (ts)")
    conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
    return conn


@pytest.mark.parametrize("values, expected", [
    ((), SQLALCHEMY_FORMAT),
    (("2026-01-01 10:00:00", "2026-01-02 10:00:00.123456"), SqliteTsFormat(" ", "", "mixed")),
    (("2026-01-01T10:00:00", "2026-01-02T10:00:00"), SqliteTsFormat("T", "", "mixed")),
    (("2026-01-01T10:00:00Z", "2026-01-02T10:00:00Z"), SqliteTsFormat("T", "Z", "never")),
    (("2026-01-01T10:00:00.000001Z", "2026-01-02T10:00:00.500000Z"), SqliteTsFormat("T", "Z", "always")),
    (("2026-01-01 10:00:00+00:00", "2026-01-02 10:00:00+00:00"), SqliteTsFormat(" ", "+00:00", "never")),
])
def test_detect_sqlite_format_finds_the_stored_form(values, expected):
    assert detect_sqlite_format(_table(*values), "t", "ts", full=True) == expected


@pytest.mark.parametrize("values, why", [
    ((1767225600, 1767312000), "not a text timestamp"),
    (("2026-01-01 10:00:00+09:00", "2026-01-02 10:00:00+09:00"), "not a text timestamp"),
    (("2026-01-01 10:00:00", "2026-01-02T10:00:00"), "mixes timestamp forms"),
    (("2026-01-01T10:00:00Z", "2026-01-02T10:00:00.000001Z"), "mixes timestamp forms"),
])
def test_detect_sqlite_format_refuses_forms_text_cannot_order(values, why):
    with pytest.raises(BadSetting, match=why):
        detect_sqlite_format(_table(*values), "t", "ts", full=True)


def test_a_full_check_finds_a_value_in_another_form_between_the_oldest_and_newest():
    conn = _table("2026-01-01 10:00:00", "2026-01-01T11:00:00", "2026-01-02 10:00:00")
    assert detect_sqlite_format(conn, "t", "ts", full=False) == SqliteTsFormat(" ", "", "mixed")
    with pytest.raises(BadSetting, match="not in the table's form"):
        detect_sqlite_format(conn, "t", "ts", full=True)


def test_the_full_check_in_rowid_ranges_reads_every_range(monkeypatch):
    """The cleanup's full check reads the table a range of rowids per statement (so its read lock
    is short): a value in another form in the last range, past a gap of rowids, is still found."""
    import core.timefmt

    monkeypatch.setattr(core.timefmt, "FULL_CHECK_ROWS", 3)
    conn = _table(*[f"2026-01-{d:02d} 10:00:00" for d in range(1, 9)])
    conn.execute("INSERT INTO t (rowid, ts) VALUES (40, '2026-01-09 10:00:00')")
    assert detect_sqlite_format(conn, "t", "ts", full=True, rowid="rowid") == SqliteTsFormat(" ", "", "mixed")
    conn.execute("INSERT INTO t (rowid, ts) VALUES (41, '2026-01-05T11:00:00')")
    with pytest.raises(BadSetting, match="not in the table's form"):
        detect_sqlite_format(conn, "t", "ts", full=True, rowid="rowid")
    assert detect_sqlite_format(_table(), "t", "ts", full=True, rowid="rowid") == SQLALCHEMY_FORMAT  # no range


@pytest.mark.parametrize("fmt, cutoff, expected", [
    (SQLALCHEMY_FORMAT, datetime(2026, 1, 31, tzinfo=UTC), "2026-01-31 00:00:00"),
    (SQLALCHEMY_FORMAT, datetime(2026, 1, 31, 0, 0, 0, 5, tzinfo=UTC), "2026-01-31 00:00:00.000005"),
    (SqliteTsFormat("T", "Z", "always"), datetime(2026, 1, 31, tzinfo=UTC), "2026-01-31T00:00:00.000000Z"),
    (SqliteTsFormat("T", "Z", "never"), datetime(2026, 1, 31, 0, 0, 0, 5, tzinfo=UTC), "2026-01-31T00:00:01Z"),
    (SQLALCHEMY_FORMAT, datetime(999, 1, 1, tzinfo=UTC), "0999-01-01 00:00:00"),
])
def test_sqlite_cutoff_is_written_in_the_stored_form(fmt, cutoff, expected):
    assert sqlite_cutoff(fmt, cutoff) == expected


@pytest.mark.parametrize("fmt, stored, in_csv", [
    (SQLALCHEMY_FORMAT, "2026-01-31 10:00:00", "2026-01-31 10:00:00+00:00"),
    (SQLALCHEMY_FORMAT, "2026-01-31 10:00:00.123456", "2026-01-31 10:00:00.123456+00:00"),
    (SqliteTsFormat("T", "", "mixed"), "2026-01-31T10:00:00", "2026-01-31 10:00:00+00:00"),
    (SqliteTsFormat("T", "Z", "never"), "2026-01-31T10:00:00Z", "2026-01-31 10:00:00+00:00"),
    (SqliteTsFormat("T", "Z", "always"), "2026-01-31T10:00:00.000000Z", "2026-01-31 10:00:00.000000+00:00"),
    (SqliteTsFormat(" ", "+00:00", "never"), "2026-01-31 10:00:00+00:00", "2026-01-31 10:00:00+00:00"),
])
def test_sqlite_timestamps_round_trip_through_the_csv_form(fmt, stored, in_csv):
    assert sqlite_to_csv(fmt, stored) == in_csv
    assert csv_to_sqlite(fmt, in_csv) == stored


def test_sqlite_to_csv_keeps_null():
    assert sqlite_to_csv(SQLALCHEMY_FORMAT, None) is None


def test_csv_to_sqlite_converts_other_offsets_and_refuses_garbage():
    assert csv_to_sqlite(SQLALCHEMY_FORMAT, "2026-01-31 19:00:00+09:00") == "2026-01-31 10:00:00"
    assert csv_to_sqlite(SqliteTsFormat("T", "Z", "always"), "2026-01-31 10:00:00Z") == "2026-01-31T10:00:00.000000Z"
    with pytest.raises(ValueError, match="not a timestamp"):
        csv_to_sqlite(SQLALCHEMY_FORMAT, "last tuesday")
