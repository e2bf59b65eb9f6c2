"""Overview counts of a large PostgreSQL table come from the planner's statistics: labelled as
estimates, close to the exact counts, and read without writing (a read-only session works)."""

from __future__ import annotations

from datetime import UTC, datetime

from core import fast_stats, stats
from tests.support.partitioned import make_monthly, sql

NOW = datetime(2024, 7, 1, tzinfo=UTC)


def _exact_per_month(url: str) -> dict[str, int]:
    rows = sql(url, "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM'), count(*) FROM conversation_log GROUP BY 1")
    return {m: n for m, n in rows[0]}


def test_large_table_counts_are_estimates_close_to_exact(pg_settings, pg_url, monkeypatch):
    make_monthly(pg_url, per_month=5000)  # 30,010 rows over 6 partitions + default, analyzed
    monkeypatch.setattr(fast_stats, "EXACT_UP_TO", 1000)  # count this small table as a large one
    s = stats(pg_settings, now=NOW)
    assert s.estimated
    assert abs(s.total_rows - 30_010) <= 30_010 * 0.02
    exact = _exact_per_month(pg_url)
    per_month: dict[str, int] = {}
    for d in s.per_day:
        per_month[d.day.strftime("%Y-%m")] = per_month.get(d.day.strftime("%Y-%m"), 0) + d.rows
    for month, n in exact.items():
        assert abs(per_month.get(month, 0) - n) <= max(50, n * 0.05), (month, per_month.get(month), n)
    assert s.oldest == datetime(2023, 12, 1, 1, tzinfo=UTC)  # exact
    assert sum(b.rows for b in s.buckets) == s.total_rows or abs(sum(b.rows for b in s.buckets) - s.total_rows) <= 3
    assert s.table_bytes and s.table_bytes > 0  # the partitions' sizes, not the empty parent's


def test_a_small_table_is_still_counted_exactly(pg_settings, pg_url):
    make_monthly(pg_url, per_month=100)
    s = stats(pg_settings, now=NOW)
    assert not s.estimated and s.total_rows == 610


def test_estimated_stats_work_in_a_read_only_session(pg_settings, pg_url, monkeypatch):
    make_monthly(pg_url, per_month=2000)
    sql(pg_url, "CREATE TABLE conversation_log_p2024_07 PARTITION OF conversation_log "
                "FOR VALUES FROM ('2024-07-01 00:00+00') TO ('2024-08-01 00:00+00')")  # never analyzed: counted
    sql(pg_url, "INSERT INTO conversation_log (created_at, message) SELECT '2024-07-02 00:00+00', 'x' "
                "FROM generate_series(1, 7)")
    db = pg_url.rsplit("/", 1)[1]
    sql(pg_url, f"ALTER DATABASE {db} SET default_transaction_read_only = on")
    from core.db import dispose_engines
    dispose_engines()
    monkeypatch.setattr(fast_stats, "EXACT_UP_TO", 1000)
    s = stats(pg_settings, now=NOW)
    assert s.estimated and any(d.day.isoformat() == "2024-07-02" and d.rows == 7 for d in s.per_day)


def test_an_unpartitioned_large_table_is_estimated_too(pg_settings, pg_url, monkeypatch):
    sql(pg_url, "CREATE TABLE conversation_log (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL, message text)",
        "INSERT INTO conversation_log (created_at, message) SELECT timestamptz '2024-01-01 00:00+00' "
        "+ g * interval '1 minute', 'm' FROM generate_series(1, 20000) g", "ANALYZE conversation_log")
    monkeypatch.setattr(fast_stats, "EXACT_UP_TO", 1000)
    s = stats(pg_settings, now=NOW)
    assert s.estimated and abs(s.total_rows - 20_000) <= 200 and s.table_bytes > 0
