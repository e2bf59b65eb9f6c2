"""Partition path vs batches + VACUUM vs COPY+gzip alone, and Overview/Preview at 1M, 3M, 10M rows.

    /work/main/.venv/bin/python bench/bench_partitions.py [--rows 3000000] [--sizes 1000000,3000000,10000000]

Needs the local PostgreSQL (TEST_PG_ADMIN_URL or postgres@127.0.0.1:5432). Creates and drops
its own databases. Prints a Markdown table (docs/benchmarks.md, "Partitioned tables").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text  # noqa: E402

from core import preview, run_cleanup, stats  # noqa: E402
from core.backup.deflate import codec_for  # noqa: E402
from core.config import load_settings  # noqa: E402
from core.db import dispose_engines  # noqa: E402

ADMIN = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
MONTHS = 12  # 2024-01 … 2024-12; the cutoff 2024-08-01 makes 7 months wholly old
CUTOFF = "2024-08-01T00:00:00+00:00"


def admin(*sql: str) -> None:
    e = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with e.connect() as c:
        for s in sql:
            c.execute(text(s))
    e.dispose()


def db_url(name: str) -> str:
    return ADMIN.rsplit("/", 1)[0] + "/" + name


def run(url: str, *sql: str) -> list:
    e = create_engine(url, isolation_level="AUTOCOMMIT")
    out = []
    with e.connect() as c:
        for s in sql:
            r = c.execute(text(s))
            out.append(r.all() if r.returns_rows else None)
    e.dispose()
    return out


def build(url: str, rows: int, *, partitioned: bool) -> None:
    """``rows`` rows spread evenly over 12 months of 2024, ~120 bytes of text each."""
    ddl = ("CREATE TABLE conversation_log (id bigserial, created_at timestamptz NOT NULL, user_id int, "
           "message text, PRIMARY KEY (id, created_at))" + (" PARTITION BY RANGE (created_at)" if partitioned else ""))
    stmts = [ddl]
    if partitioned:
        for m in range(1, MONTHS + 1):
            nxt = "2025-01-01" if m == 12 else f"2024-{m + 1:02d}-01"
            stmts.append(f"CREATE TABLE conversation_log_p2024_{m:02d} PARTITION OF conversation_log "
                         f"FOR VALUES FROM ('2024-{m:02d}-01 00:00+00') TO ('{nxt} 00:00+00')")
        stmts.append("CREATE TABLE conversation_log_default PARTITION OF conversation_log DEFAULT")
    stmts += [
        "INSERT INTO conversation_log (created_at, user_id, message) SELECT timestamptz '2024-01-01 00:00+00' "
        f"+ (g::float8 / {rows}) * interval '366 days', g % 5000, md5(g::text) || ' ' || md5((g * 7)::text) || ' '"
        f" || repeat('chat ', 10) FROM generate_series(1, {rows}) g",
        "CREATE INDEX ON conversation_log (created_at)",
        "VACUUM ANALYZE conversation_log",
    ]
    run(url, *stmts)


def settings_for(url: str, backup_dir: str):
    return load_settings({"database_url": url, "backup_dir": backup_dir, "batch_size": 50_000},
                         environ={}, env_file=None)


def wal_and_size(url: str) -> tuple[int, int]:
    lsn, size = run(url, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn",
                    "SELECT coalesce(sum(pg_total_relation_size(relid)), pg_total_relation_size('conversation_log')) "
                    "FROM pg_partition_tree('conversation_log')")
    return int(lsn[0][0]), int(size[0][0])


def cleanup_paths(rows: int) -> list[tuple[str, float, int, int, int]]:
    """(way, seconds, rows, WAL bytes, table bytes after) for the three ways of taking the old months out."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for way, partitioned in (("partition path (detach, COPY+gzip, drop)", True),
                                 ("batches + VACUUM (unpartitioned table)", False),
                                 ("COPY+gzip alone (no delete)", True)):
            name = f"bench_parts_{uuid.uuid4().hex[:8]}"
            admin(f"CREATE DATABASE {name}")
            url = db_url(name)
            try:
                build(url, rows, partitioned=partitioned)
                run(url, "CHECKPOINT")
                wal0, _ = wal_and_size(url)
                s = settings_for(url, f"{tmp}/{name}")
                Path(s.backup_dir).mkdir(parents=True)
                t0 = time.perf_counter()
                if way.startswith("COPY"):
                    n = copy_gzip(url, f"{tmp}/{name}.csv.gz", s.gzip_level)
                else:
                    r = run_cleanup(s, cutoff=CUTOFF, notify=False)
                    n = r.rows_deleted
                    if not partitioned:
                        run(url, "VACUUM conversation_log")
                secs = time.perf_counter() - t0
                wal1, size1 = wal_and_size(url)
                out.append((way, secs, n, wal1 - wal0, size1))
            finally:
                dispose_engines()
                admin(f"DROP DATABASE {name} WITH (FORCE)")
    return out


def copy_gzip(url: str, path: str, level: int) -> int:
    """COPY the old rows to STDOUT into a gzip file with the backups' codec and level; the rows copied."""
    import psycopg2
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = psycopg2.connect(host=u.host, port=u.port or 5432, user=u.username, dbname=u.database)
    z = codec_for(level).compressobj()

    class Sink:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(z.compress(data))

    with open(path, "wb") as f, conn.cursor() as cur:
        cur.copy_expert(f"COPY (SELECT * FROM conversation_log WHERE created_at < '{CUTOFF}') TO STDOUT "
                        "WITH (FORMAT csv, HEADER true)", Sink(f))
        n = cur.rowcount
        f.write(z.flush())
        os.fsync(f.fileno())
    conn.close()
    return n


def page_timings(sizes: list[int]) -> list[tuple[int, float, float]]:
    """(rows, Overview stats ms, Preview ms): medians of 5 after one warm-up, on a monthly-partitioned table."""
    out = []
    for rows in sizes:
        name = f"bench_parts_{uuid.uuid4().hex[:8]}"
        admin(f"CREATE DATABASE {name}")
        url = db_url(name)
        try:
            build(url, rows, partitioned=True)
            s = settings_for(url, tempfile.gettempdir())
            times = {"stats": [], "preview": []}
            for i in range(6):
                for what in ("stats", "preview"):
                    t0 = time.perf_counter()
                    stats(s) if what == "stats" else preview(s, cutoff=CUTOFF)
                    if i:
                        times[what].append(time.perf_counter() - t0)
            out.append((rows, 1000 * statistics.median(times["stats"]), 1000 * statistics.median(times["preview"])))
        finally:
            dispose_engines()
            admin(f"DROP DATABASE {name} WITH (FORCE)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--sizes", default="1000000,3000000,10000000")
    a = ap.parse_args()
    paths = cleanup_paths(a.rows)
    copy_s = next(p[1] for p in paths if p[0].startswith("COPY"))
    batch_s = next(p[1] for p in paths if p[0].startswith("batches"))
    print(f"\n{a.rows:,} rows over 12 months; cutoff {CUTOFF} (7 months wholly old)\n")
    print("| way | seconds | rows | × COPY+gzip | × batches+VACUUM | WAL written | table + indexes after |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for way, secs, n, wal, size in paths:
        print(f"| {way} | {secs:.2f} | {n:,} | {secs / copy_s:.2f} | {secs / batch_s:.2f} | "
              f"{wal / 2**20:.1f} MiB | {size / 2**20:.0f} MiB |")
    print("\n| rows | Overview (stats) ms | Preview ms |\n| ---: | ---: | ---: |")
    for rows, st_ms, pv_ms in page_timings([int(x) for x in a.sizes.split(",")]):
        print(f"| {rows:,} | {st_ms:.0f} | {pv_ms:.0f} |")


if __name__ == "__main__":
    main()
