"""Overview's rows per day count days of the display zone (core.stats ``zone=``), exactly to the
second, on PostgreSQL and SQLite: a UTC evening is the next day in Seoul, half-hour and
45-minute zones split at their own midnight, DST days are 23 and 25 hours long, zone-less
columns are read in the table's zone first; large tables' estimates fold into the same days."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from core import fast_stats, load_settings, stats
from core.config import Settings
from core.db import get_engine
from core.errors import BadSetting
from core.zonedays import day_start, fold_days, offset_periods
from tests.support.partitioned import make_monthly, sql
from tests.test_dashboard import signed_in
from tests.test_dashboard_ko import app_env  # noqa: F401 (the fixture)

NOW = datetime(2026, 12, 1, tzinfo=UTC)
EVENING_UTC = "2026-01-05 20:00:00"  # 2026-01-06 05:00 in Seoul


def _table(settings: Settings, stamps: list[str], *, zoneless: bool = False) -> None:
    """conversation_log(id, created_at, message) holding one row per stamp (UTC, or wall times of the
    table's zone when ``zoneless``; SQLite stores the text as given)."""
    engine = get_engine(settings)
    pg = engine.dialect.name == "postgresql"
    kind = ("timestamp" if zoneless else "timestamptz") if pg else "TEXT"
    key = "bigserial PRIMARY KEY" if pg else "INTEGER PRIMARY KEY"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE conversation_log (id {key}, created_at {kind} NOT NULL, message text)"))
        for stamp in stamps:
            value = stamp + ("+00" if pg and not zoneless else "")
            conn.execute(text("INSERT INTO conversation_log (created_at, message) VALUES (:t, 'm')"), {"t": value})


def _with(settings: Settings, **extra: str) -> Settings:
    return load_settings({"database_url": settings.database_url, "backup_dir": settings.backup_dir, **extra},
                         environ={}, env_file=None)


def _days(settings: Settings, zone: str) -> dict[str, int]:
    return {d.day.isoformat(): d.rows for d in stats(settings, now=NOW, zone=zone).per_day}


def test_a_utc_evening_counts_on_the_next_day_in_seoul(settings: Settings):
    _table(settings, [EVENING_UTC, EVENING_UTC, "2026-01-05 14:59:59.900000", "2026-01-05 15:00:00"])
    assert _days(settings, "UTC") == {"2026-01-05": 4}
    assert _days(settings, "Asia/Seoul") == {"2026-01-05": 1, "2026-01-06": 3}
    assert stats(settings, now=NOW).per_day == stats(settings, now=NOW, zone="UTC").per_day  # UTC by default


@pytest.mark.parametrize(("zone", "midnight"), [("Asia/Kolkata", "18:30:00"), ("Asia/Kathmandu", "18:15:00")])
def test_half_hour_and_quarter_hour_zones_split_at_their_own_midnight(settings: Settings, zone: str, midnight: str):
    before = (datetime.fromisoformat(f"2026-01-05 {midnight}") - timedelta(microseconds=1)).isoformat(" ")
    _table(settings, [before, f"2026-01-05 {midnight}", "2026-01-05 10:00:00"])
    assert _days(settings, zone) == {"2026-01-05": 2, "2026-01-06": 1}
    assert _days(settings, "UTC") == {"2026-01-05": 3}


def test_new_york_days_around_both_dst_changes_are_23_and_25_hours_long(settings: Settings):
    # 8 March 2026 starts at 05:00 UTC (EST) and ends at 04:00 UTC the next day (EDT): 23 hours;
    # 1 November starts at 04:00 UTC (EDT) and ends at 05:00 UTC the next day (EST): 25 hours.
    _table(settings, ["2026-03-08 04:59:59", "2026-03-08 05:00:00", "2026-03-09 03:59:59", "2026-03-09 04:00:00",
                      "2026-11-01 03:59:59", "2026-11-01 04:00:00", "2026-11-02 04:59:59", "2026-11-02 05:00:00"])
    assert _days(settings, "America/New_York") == {"2026-03-07": 1, "2026-03-08": 2, "2026-03-09": 1,
                                                   "2026-10-31": 1, "2026-11-01": 2, "2026-11-02": 1}


def test_a_zone_less_column_is_read_in_the_tables_zone_then_moved_to_the_display_zone(settings: Settings):
    ny = _with(settings, timestamp_timezone="America/New_York")
    # wall times of New York: 15:30 EST = 20:30 UTC = 05:30 KST the next day; 20:00 EST = 01:00 UTC the next day
    _table(ny, ["2026-01-05 15:30:00", "2026-01-05 20:00:00", "2026-07-05 20:30:00"], zoneless=True)
    assert _days(ny, "America/New_York") == {"2026-01-05": 2, "2026-07-05": 1}
    assert _days(ny, "UTC") == {"2026-01-05": 1, "2026-01-06": 1, "2026-07-06": 1}  # 20:30 EDT = 00:30 UTC
    assert _days(ny, "Asia/Seoul") == {"2026-01-06": 2, "2026-07-06": 1}


def test_sqlite_text_with_a_utc_suffix_is_read_as_utc_whatever_the_tables_zone(tmp_path):
    s = load_settings({"database_url": f"sqlite:///{tmp_path / 't.db'}", "backup_dir": str(tmp_path / "b"),
                       "timestamp_timezone": "America/New_York"}, environ={}, env_file=None)
    _table(s, ["2026-01-05T20:00:00.000000Z", "2026-01-05T10:00:00.000000Z"])
    assert _days(s, "Asia/Seoul") == {"2026-01-05": 1, "2026-01-06": 1}
    assert _days(s, "UTC") == {"2026-01-05": 2}


def test_a_zone_that_is_not_a_zone_is_refused(settings: Settings):
    _table(settings, [EVENING_UTC])
    with pytest.raises(BadSetting, match="DISPLAY_TIMEZONE"):
        stats(settings, zone="Mars/Olympus")


def test_offset_periods_follow_both_zones_changes():
    lo, hi = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC)
    assert offset_periods(lo, hi, display="Asia/Seoul") == [(lo, 9 * 3600)]
    assert offset_periods(lo, hi, display="Asia/Seoul", stored="America/New_York") == [
        (lo, 14 * 3600), (datetime(2026, 3, 8, 7, tzinfo=UTC), 13 * 3600),
        (datetime(2026, 11, 1, 6, tzinfo=UTC), 14 * 3600)]
    # an offset of whole seconds, not minutes: Monrovia kept -00:44:30 until 1972
    old = offset_periods(datetime(1971, 1, 1, tzinfo=UTC), datetime(1973, 1, 1, tzinfo=UTC), display="Africa/Monrovia")
    assert [s for _t, s in old] == [-2670, 0]


def test_folding_spans_into_days_splits_them_at_the_zones_midnights():
    a, b = datetime(2026, 1, 5, 12, tzinfo=UTC), datetime(2026, 1, 5, 18, tzinfo=UTC)  # 21:00 to 03:00 in Seoul
    assert fold_days([(a, b, 60.0), (a, a, 5.0)], "Asia/Seoul") == {date(2026, 1, 5): 35.0, date(2026, 1, 6): 30.0}
    assert day_start(date(2026, 3, 8), "America/New_York") == datetime(2026, 3, 8, 5, tzinfo=UTC)


# ---------------------------------------------------------------------------
# Large PostgreSQL tables: the planner's estimate, in the same days


def test_estimated_days_are_days_of_the_display_zone(pg_settings: Settings, pg_url: str, monkeypatch):
    sql(pg_url, "CREATE TABLE conversation_log (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL, message text)",
        "INSERT INTO conversation_log (created_at, message) SELECT timestamptz '2024-01-01 00:00+00' "
        "+ g * interval '1 minute', 'm' FROM generate_series(0, 19999) g", "ANALYZE conversation_log")
    exact = _days(pg_settings, "Asia/Seoul")
    assert exact["2024-01-01"] == 15 * 60  # Seoul's 1 January ends at 15:00 UTC
    monkeypatch.setattr(fast_stats, "EXACT_UP_TO", 1000)
    s = stats(pg_settings, now=NOW, zone="Asia/Seoul")
    assert s.estimated
    estimated = {d.day.isoformat(): d.rows for d in s.per_day}
    assert estimated.keys() == exact.keys()
    for day, n in exact.items():
        assert abs(estimated[day] - n) <= max(30, n * 0.03), (day, estimated[day], n)


def test_estimated_days_of_a_zone_less_column_read_it_in_the_tables_zone(pg_settings: Settings, pg_url: str,
                                                                         monkeypatch):
    ny = _with(pg_settings, timestamp_timezone="America/New_York")
    sql(pg_url, "CREATE TABLE conversation_log (id bigserial PRIMARY KEY, created_at timestamp NOT NULL, message text)",
        "INSERT INTO conversation_log (created_at, message) SELECT timestamp '2024-01-01 00:00' "
        "+ g * interval '1 minute', 'm' FROM generate_series(0, 19999) g", "ANALYZE conversation_log")
    exact = _days(ny, "Asia/Seoul")
    assert exact["2024-01-01"] == 10 * 60  # New York's midnight is 14:00 in Seoul
    monkeypatch.setattr(fast_stats, "EXACT_UP_TO", 1000)
    s = stats(ny, now=NOW, zone="Asia/Seoul")
    assert s.estimated
    estimated = {d.day.isoformat(): d.rows for d in s.per_day}
    assert estimated.keys() == exact.keys()
    for day, n in exact.items():
        assert abs(estimated[day] - n) <= max(30, n * 0.03), (day, estimated[day], n)


def test_a_never_analyzed_partition_is_counted_exactly_in_display_zone_days(pg_settings: Settings, pg_url: str,
                                                                            monkeypatch):
    make_monthly(pg_url, per_month=2000)
    sql(pg_url, "CREATE TABLE conversation_log_p2024_07 PARTITION OF conversation_log "
                "FOR VALUES FROM ('2024-07-01 00:00+00') TO ('2024-08-01 00:00+00')",  # never analyzed
        "INSERT INTO conversation_log (created_at, message) SELECT '2024-07-02 20:00+00', 'x' "
        "FROM generate_series(1, 7)")
    monkeypatch.setattr(fast_stats, "EXACT_UP_TO", 1000)
    seoul = {d.day.isoformat(): d.rows for d in stats(pg_settings, now=NOW, zone="Asia/Seoul").per_day}
    utc = {d.day.isoformat(): d.rows for d in stats(pg_settings, now=NOW, zone="UTC").per_day}
    assert seoul.get("2024-07-03") == 7 and "2024-07-02" not in seoul
    assert utc.get("2024-07-02") == 7 and "2024-07-03" not in utc


# ---------------------------------------------------------------------------
# The Overview page


def _chart(at) -> tuple[dict, dict[str, list]]:
    """Overview's chart: its Vega-Lite spec and its data columns (what Streamlit sends to the browser)."""
    import pyarrow as pa

    (chart,) = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    columns: dict[str, list] = {}
    for ds in chart.proto.datasets:
        for name, values in pa.ipc.open_stream(ds.data.data).read_all().to_pydict().items():
            columns.setdefault(name, []).extend(values)
    for data in spec.get("datasets", {}).values():
        for row in data:
            for name, value in row.items():
                columns.setdefault(name, []).append(value)
    return spec, columns


def test_overview_counts_and_labels_days_of_the_display_zone(settings: Settings, app_env):  # noqa: F811
    recent = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    _table(settings, [EVENING_UTC, EVENING_UTC, recent])
    app_env(settings, DISPLAY_TIMEZONE="Asia/Seoul")
    at = signed_in()
    assert not at.exception
    spec, data = _chart(at)
    text_of_spec = json.dumps(spec, ensure_ascii=False)
    assert '"day (KST)"' in text_of_spec and "day (UTC)" not in text_of_spec
    seoul = ZoneInfo("Asia/Seoul")
    recent_day = (datetime.now(UTC) - timedelta(hours=1)).astimezone(seoul).date().isoformat()
    sides = dict(zip(data["label"], data["side"], strict=True))
    assert sides == {"2026-01-06": "older than the cutoff", recent_day: "kept"}
    rows = dict(zip(data["label"], data["rows"], strict=True))
    assert rows["2026-01-06"] == 2
    # the cutoff's rule at the cutoff's wall time in Seoul (drawn on a UTC scale), not at its UTC time
    (cutoff,) = data["cutoff"]
    cutoff = cutoff if isinstance(cutoff, datetime) else datetime.fromisoformat(str(cutoff).replace("Z", "+00:00"))
    wall = (datetime.now(UTC) - timedelta(days=settings.retention_days)).astimezone(seoul)
    assert abs(cutoff.replace(tzinfo=None) - wall.replace(tzinfo=None)) < timedelta(minutes=5)

    app_env(settings, DISPLAY_TIMEZONE="UTC")
    at = signed_in()
    spec, data = _chart(at)
    assert '"day (UTC)"' in json.dumps(spec) and "2026-01-05" in data["label"] and "2026-01-06" not in data["label"]
