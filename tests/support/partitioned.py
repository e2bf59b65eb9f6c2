"""Monthly range-partitioned log tables on PostgreSQL (plain declarative, or pg_partman 4.7's layout)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

MONTHS = ("2024-01", "2024-02", "2024-03", "2024-04", "2024-05", "2024-06")
CUTOFF = datetime(2024, 4, 15, tzinfo=UTC)  # Jan–Mar wholly older; April straddles


def sql(url: str, *statements: str) -> list:
    """Run statements in autocommit; the rows of each (or None)."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    out = []
    try:
        with engine.connect() as conn:
            for s in statements:
                res = conn.execute(text(s))
                out.append(res.all() if res.returns_rows else None)
    finally:
        engine.dispose()
    return out


def _next(month: str) -> str:
    y, m = map(int, month.split("-"))
    return f"{y + m // 12}-{m % 12 + 1:02d}"


def make_monthly(url: str, *, per_month: int = 40, default: bool = True, in_default: int = 10,
                 table: str = "conversation_log") -> None:
    """``table`` partitioned by month over MONTHS (+ a default partition holding ``in_default``
    rows of December 2023), ``per_month`` rows spread over each month."""
    stmts = [f"CREATE TABLE {table} (id bigserial, created_at timestamptz NOT NULL, message text, "
             "PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)",
             f"CREATE INDEX ON {table} (created_at)"]
    for m in MONTHS:
        stmts.append(f"CREATE TABLE {table}_p{m.replace('-', '_')} PARTITION OF {table} "
                     f"FOR VALUES FROM ('{m}-01 00:00+00') TO ('{_next(m)}-01 00:00+00')")
    if default:
        stmts.append(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
    stmts.append(insert_rows(table, MONTHS, per_month))
    if default and in_default:
        stmts.append(f"INSERT INTO {table} (created_at, message) SELECT timestamptz '2023-12-01 00:00+00' "
                     f"+ g * interval '1 hour', 'old default ' || g FROM generate_series(1, {in_default}) g")
    stmts.append(f"ANALYZE {table}")
    sql(url, *stmts)


def insert_rows(table: str, months: tuple[str, ...], per_month: int) -> str:
    """One INSERT of ``per_month`` rows in each month (spread over its first 27 days)."""
    parts = [f"SELECT timestamptz '{m}-01 00:00+00' + (g * 27.0 / {per_month}) * interval '1 day' AS t, "
             f"'row ' || g || ' of {m}' AS msg FROM generate_series(0, {per_month - 1}) g" for m in months]
    return f"INSERT INTO {table} (created_at, message) SELECT t, msg FROM ({' UNION ALL '.join(parts)}) s ORDER BY t"


def ids(url: str, table: str = "conversation_log") -> set[int]:
    return {r[0] for r in sql(url, f"SELECT id FROM {table}")[0]}


def partitions(url: str, table: str = "conversation_log") -> list[str]:
    return sorted(r[0] for r in sql(url, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                         f"WHERE i.inhparent = '{table}'::regclass")[0])


def backup_ids(backup_dir: Path) -> list[int]:
    """Ids in every finished backup (first CSV column), duplicates kept."""
    out: list[int] = []
    for f in sorted(Path(backup_dir).glob("*.csv.gz")):
        with gzip.open(f, "rt") as fh:
            next(fh)
            out += [int(line.split(",", 1)[0]) for line in fh if line.strip()]
    return out
