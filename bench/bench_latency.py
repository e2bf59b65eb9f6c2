"""The application's write latency during a cleanup, with and without ``CLEANUP_BATCH_TARGET_MS``.

An "application" process inserts one row every ~10 ms into the log table (SQLite: its
own connection, busy timeout 30 s, autocommit; PostgreSQL: its own connection, one
INSERT and COMMIT) and records how long each write (the INSERT and its COMMIT) took; a write blocked by the
cleanup counts its whole wait, so the writes that would have been due meanwhile are not
counted (p99 is of the writes made, not of 10 ms slots). Meanwhile ``python -m core run``
archives and deletes the old two thirds of a table of N rows (bench/build_table.py).
Each configuration starts from a fresh copy of the same table. Prints p50 / p99 / max
write latency, the cleanup's duration, its batches and its longest batch lock hold (from the
cleanup's ``--debug`` log, kept in the case's folder as cleanup.log) side by side.

    python bench/bench_latency.py --rows 300000 [--pg-url postgresql+psycopg2://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_table import TABLE, build_pg, build_sqlite, pg_connect, restore_pg, restore_sqlite  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
INTERVAL_S = 0.010


def writer(url: str, stop: mp.Event, out: str) -> None:
    """Insert one row every INTERVAL_S until ``stop``; write each insert's latency (ms) to ``out``."""
    pg = url.startswith("postgresql")
    if pg:
        conn = pg_connect(url, autocommit=False)
        cur = conn.cursor()
        cur.execute(f"SELECT max(id) FROM {TABLE}")
        next_id = cur.fetchone()[0] + 1_000_000
        conn.commit()
    else:
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
    latencies = []
    while not stop.is_set():
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        if pg:
            cur.execute(f"INSERT INTO {TABLE} (id, session_id, role, message, created_at) VALUES (%s, 's', 'user', "
                        "'hello', %s)", (next_id, now))
            conn.commit()
            next_id += 1
        else:
            conn.execute(f"INSERT INTO {TABLE} (session_id, role, message, created_at) VALUES ('s', 'user', 'hello', ?)",
                         (now.replace(tzinfo=None).isoformat(" ", "microseconds"),))
        latencies.append(1000 * (time.perf_counter() - t0))
        time.sleep(max(0.0, INTERVAL_S - (time.perf_counter() - t0)))
    Path(out).write_text(json.dumps(latencies))


def measure(url: str, workdir: Path, target_ms: int | None) -> dict:
    stop = mp.Event()
    out = workdir / "latencies.json"
    proc = mp.Process(target=writer, args=(url, stop, str(out)))
    proc.start()
    time.sleep(1.0)  # the writer's baseline before the cleanup
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEANUP_", "LOG_", "SLACK_"))}
    env.update(DATABASE_URL=url, BACKUP_DIR=str(workdir / "backups"), PYTHONPATH=str(ROOT))
    if target_ms:
        env["CLEANUP_BATCH_TARGET_MS"] = str(target_ms)
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "core", "run", "--json", "--no-notify", "--env-file", os.devnull,
                          "--debug"], env=env, capture_output=True, text=True, cwd=workdir)
    (workdir / "cleanup.log").write_text(run.stderr)  # each batch's lock hold and its parts (--debug)
    holds = [int(ms) for ms in re.findall(r"core\.batches: batch of \d+ rows.*? held (?:the write lock|its locks) "
                                          r"(\d+) ms", run.stderr)]
    took = time.monotonic() - t0
    time.sleep(0.5)
    stop.set()
    proc.join()
    if run.returncode:
        raise SystemExit(f"cleanup failed: {run.stderr}")
    result = json.loads(run.stdout)
    lat = sorted(json.loads(out.read_text()))
    q = statistics.quantiles(lat, n=100)
    return {"rows": result["rows_deleted"], "cleanup_s": took, "writes": len(lat), "p50": q[49], "p99": q[98],
            "max": lat[-1], "batches": len(holds), "max_hold": max(holds, default=0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--pg-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--target-ms", type=int, default=200)
    ap.add_argument("--workdir", default="/tmp/lrc_bench_latency")
    ap.add_argument("--only", choices=["sqlite", "postgresql"])
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    anchor = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    load = "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path(
        "/proc/loadavg").exists() else "unknown"  # other processes share the CPUs: say how busy they were
    rows = []
    for dialect in ("sqlite", "postgresql"):
        if args.only and dialect != args.only:
            continue
        if dialect == "sqlite":
            tpl = work / "template.db"
            if tpl.exists():
                tpl.unlink()
            build_sqlite(tpl, args.rows, anchor, False)
        else:
            build_pg(args.pg_url.replace("+psycopg2", ""), args.rows, anchor, False)
        for target in (None, args.target_ms):
            case = work / f"{dialect}-{target or 'none'}"
            subprocess.run(["rm", "-rf", str(case)], check=True)
            case.mkdir()
            if dialect == "sqlite":
                url = restore_sqlite(tpl, case / "run.db")
            else:
                url = restore_pg(args.pg_url.replace("+psycopg2", "")).replace("postgresql://", "postgresql+psycopg2://")
            m = measure(url, case, target)
            rows.append((dialect, f"{target} ms" if target else "unset (50k-row batches)", m))
            print(f"{dialect:10} target {rows[-1][1]:24} {m}", file=sys.stderr, flush=True)
    print(f"\n{args.rows:,} rows, two thirds older than the cutoff; one insert every {1000 * INTERVAL_S:.0f} ms\n")
    print(f"machine load before: {load}\n")
    print("| database | CLEANUP_BATCH_TARGET_MS | rows deleted | cleanup | batches | longest lock hold | writes | p50 "
          "| p99 | max |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for dialect, target, m in rows:
        print(f"| {dialect} | {target} | {m['rows']:,} | {m['cleanup_s']:.1f} s | {m['batches']} | {m['max_hold']} ms | "
              f"{m['writes']:,} | {m['p50']:.1f} ms | {m['p99']:.1f} ms | {m['max']:.0f} ms |")


if __name__ == "__main__":
    main()
