"""Benchmark the cleanup: the naive pandas path, the raw limit, and ``python -m core run``.

Usage (from the repository root; PostgreSQL reachable as in ``--pg-url``)::

    .venv/bin/python bench/bench.py --sizes 100k,1m --db both [--repeat 3]
    .venv/bin/python bench/bench.py --sizes 100k,3m --db pg --approaches limit,core

For each database and size it builds a realistic ``conversation_log`` once (PostgreSQL:
database ``lrc_bench`` filled by COPY FROM STDIN; SQLite: a file in a temp dir), then, for
every measured approach, restores a fresh copy (``CREATE DATABASE lrc_bench_run TEMPLATE
lrc_bench`` / a file copy) and runs the approach in its own subprocess, measuring wall
time and peak RSS (``os.wait4``).  The order of the approaches alternates across
repetitions; with ``--repeat N`` medians are printed.

- naive: pandas ``read_sql`` of the old rows, ``to_csv``, one ``DELETE`` (the tutorial).
- limit: one ``COPY (SELECT … WHERE created_at < cutoff) TO STDOUT`` (SQLite: one cursor
  and ``csv.writer``) into zlib gzip level 1, fsync, one ``DELETE``, one transaction.
- limit-isal: the same with ISA-L gzip level 1, the compressor core uses (for reference;
  the targets are measured against ``limit``, as issue 6 defines it).
- core: ``python -m core run --json --no-notify --cutoff TS``; its backup is then checked
  with ``python -m core verify FILE --json``.

It also times the dashboard's ``core.stats.stats`` and ``core.stats.preview`` (median of
3) on the full table, prints the ratios core/limit and naive/core, and PASS/FAIL lines
for the targets of issue 6.  Everything it creates (databases, files) is removed at the
end, also on errors and Ctrl-C.  The naive path is skipped above 3M rows (it needs about
3.5 KB of memory per archived row).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from build_table import (
    RUN_DB,
    TABLE,
    TPL_DB,
    build_pg,
    build_sqlite,
    pg_admin,
    pg_connect,
    restore_pg,
    restore_sqlite,
)

ROOT = Path(__file__).resolve().parent.parent
APPROACHES = ("naive", "limit", "limit-isal", "core")
EXTRA = ("core-store",)  # core with BACKUP_STORE on a loopback moto server (issue 15); by --approaches only
_S3: dict = {}
MB = 1e6

# ---------------------------------------------------------------------------
# The approaches (each runs in its own process: ``bench.py --worker NAME``)

class GzipOut:
    """gzip level 1 through zlib (or ISA-L, as core uses), compressing 1 MiB pieces in this thread."""

    def __init__(self, path: str, isal: bool = False) -> None:
        self.f = open(path, "wb")  # noqa: SIM115
        if isal:
            from isal import isal_zlib
            self.z = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
        else:
            self.z = zlib.compressobj(1, zlib.DEFLATED, 31)
        self.buf: list[bytes] = []
        self.n = 0

    def write(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.buf.append(data)
        self.n += len(data)
        if self.n >= 1 << 20:
            self.f.write(self.z.compress(b"".join(self.buf)))
            self.buf, self.n = [], 0

    def close(self) -> None:
        self.f.write(self.z.compress(b"".join(self.buf)) + self.z.flush())
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()


def worker(name: str, url: str, cutoff: str, out: str) -> dict:
    sqlite = url.startswith("sqlite")
    c = datetime.fromisoformat(cutoff)
    param = c.replace(tzinfo=None).isoformat(" ", "microseconds") if sqlite else c
    if name == "naive":
        import pandas as pd
        import sqlalchemy as sa
        eng = sa.create_engine(url)
        df = pd.read_sql(sa.text(f"SELECT * FROM {TABLE} WHERE created_at < :c"), eng, params={"c": param})
        df.to_csv(out, index=False)
        with eng.begin() as conn:
            n = conn.execute(sa.text(f"DELETE FROM {TABLE} WHERE created_at < :c"), {"c": param}).rowcount
        return {"rows": n, "read": len(df)}
    w = GzipOut(out, isal=name == "limit-isal")
    if sqlite:
        con = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        cur = con.execute(f"SELECT * FROM {TABLE} WHERE created_at < ?", (param,))
        buf = io.StringIO()
        cw = csv.writer(buf, lineterminator="\n")
        cw.writerow([d[0] for d in cur.description])
        read = 0
        while rows := cur.fetchmany(5000):
            cw.writerows(rows)
            read += len(rows)
            w.write(buf.getvalue())
            buf.seek(0)
            buf.truncate()
        w.close()
        n = con.execute(f"DELETE FROM {TABLE} WHERE created_at < ?", (param,)).rowcount
        con.execute("COMMIT")
        return {"rows": n, "read": read}
    import psycopg2.extensions
    conn = pg_connect(url, autocommit=False)
    conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ)
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        cur.copy_expert(cur.mogrify(f"COPY (SELECT * FROM {TABLE} WHERE created_at < %s) TO STDOUT "
                                    "WITH (FORMAT csv, HEADER true)", [c]).decode(), w)
        read = cur.rowcount
        w.close()  # fsynced before the DELETE commits
        cur.execute(f"DELETE FROM {TABLE} WHERE created_at < %s", [c])
        n = cur.rowcount
    conn.commit()
    return {"rows": n, "read": read}


def run_proc(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float, float, int, str, str]:
    """Run ``cmd``: wall s, peak RSS MB, CPU s (user+sys), exit code, stdout, stderr.

    Peak RSS comes from ``/usr/bin/time`` when present: on Linux a child's own
    ru_maxrss also counts the memory of the (large) benchmark process it forked from.
    """
    so, se, tf = cwd / "stdout.txt", cwd / "stderr.txt", cwd / "time.txt"
    timer = ["/usr/bin/time", "-f", "%M %U %S", "-o", str(tf)] if os.path.exists("/usr/bin/time") else []
    t0 = time.perf_counter()
    with open(so, "wb") as fo, open(se, "wb") as fe:
        p = subprocess.Popen(timer + cmd, stdout=fo, stderr=fe, env=env, cwd=cwd)
        _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if timer:
        kib, user, system = tf.read_text().split()[-3:]
        peak, cpu = int(kib) * 1024 / MB, float(user) + float(system)
    else:
        peak, cpu = ru.ru_maxrss * 1024 / MB, ru.ru_utime + ru.ru_stime
    return wall, peak, cpu, p.returncode, so.read_text(), se.read_text()


def measure(approach: str, url: str, cutoff: str, work: Path, expect: int) -> dict:
    backups = work / f"backups-{approach}"
    shutil.rmtree(backups, ignore_errors=True)
    backups.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": url, "BACKUP_DIR": str(backups),
           "LOG_TABLE": TABLE, "LOG_TIMESTAMP_COLUMN": "created_at"}
    if approach == "core-store":
        env.update(store_env())
    if approach.startswith("core"):
        cmd = [sys.executable, "-m", "core", "run", "--json", "--no-notify", "--cutoff", cutoff]
    else:
        out = str(backups / ("naive.csv" if approach == "naive" else f"{approach}.csv.gz"))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", approach, "--db-url", url,
               "--cutoff", cutoff, "--out", out]
    wall, peak, cpu, rc, stdout, stderr = run_proc(cmd, env, work)
    if rc != 0:
        raise SystemExit(f"{approach} failed (exit {rc}): {stderr.strip()[-2000:]}")
    res = json.loads(stdout)
    if approach == "core-store":
        rows, size = res["rows_deleted"], check_stored(res, expect) / MB
        return {"wall": wall, "peak": peak, "cpu": cpu, "backup": size, "rows": rows}
    if approach == "core":
        if res["status"] != "success" or res["rows_deleted"] != expect:
            raise SystemExit(f"core run: {res}")
        out = res["backup_file"]
        _, _, _, vrc, vout, verr = run_proc([sys.executable, "-m", "core", "verify", out, "--json"], env, work)
        ver = json.loads(vout or "{}")
        if vrc != 0 or not ver.get("ok") or ver.get("rows") != expect:
            raise SystemExit(f"core backup does not verify: {vout} {verr}")
        rows = res["rows_deleted"]
    else:
        rows = res["rows"]
        if rows != expect or res["read"] != expect:
            raise SystemExit(f"{approach}: archived {res['read']}, deleted {rows}, expected {expect}")
    size = os.path.getsize(out) / MB
    shutil.rmtree(backups, ignore_errors=True)
    return {"wall": wall, "peak": peak, "cpu": cpu, "backup": size, "rows": rows}


def store_env() -> dict[str, str]:
    """A moto S3 server on loopback (started once) and a fresh bucket: the environment of a run with a store."""
    import boto3

    if "url" not in _S3:  # its own process: a server thread in this one would compete for the GIL
        import atexit
        import socket
        import urllib.request

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        _S3["server"] = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        atexit.register(_S3["server"].terminate)
        _S3["url"] = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(_S3["url"] + "/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
    env = {"AWS_ENDPOINT_URL": _S3["url"], "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1"}
    _S3["client"] = boto3.client("s3", endpoint_url=_S3["url"], aws_access_key_id="bench",
                                 aws_secret_access_key="bench", region_name="us-east-1")
    bucket = f"bench-{time.monotonic_ns()}"
    _S3["client"].create_bucket(Bucket=bucket)
    return {**env, "BACKUP_STORE": f"s3://{bucket}/backups"}


def check_stored(res: dict, expect: int) -> int:
    """The stored object of a core-store run matches the run's sha256; its size in bytes."""
    import hashlib

    if res["status"] != "success" or res["rows_deleted"] != expect or not res.get("backup_url"):
        raise SystemExit(f"core-store run: {res}")
    bucket, key = res["backup_url"][5:].split("/", 1)
    body = _S3["client"].get_object(Bucket=bucket, Key=key)["Body"].read()
    if hashlib.sha256(body).hexdigest() != res["sha256"]:
        raise SystemExit(f"the stored backup {res['backup_url']} does not match the run's sha256")
    # Empty the bucket: moto keeps every object in its process's memory, and a store that grows by
    # 130 MB per repetition slows later repetitions in a way no real bucket does.
    left = _S3["client"].list_objects_v2(Bucket=bucket).get("Contents", [])
    for o in left:
        _S3["client"].delete_object(Bucket=bucket, Key=o["Key"])
    _S3["client"].delete_bucket(Bucket=bucket)
    return len(body)


def time_dashboard(url: str, cutoff: str, work: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from core.config import Settings
    from core.db import dispose_engines
    from core.stats import preview, stats
    s = Settings(database_url=url, table=TABLE, backup_dir=str(work))
    out: dict[str, float] = {}
    for name, fn in (("stats", lambda: stats(s)), ("preview", lambda: preview(s, cutoff=cutoff))):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            r = fn()
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
        out[name + "_warnings"] = len(r.warnings)
    dispose_engines()
    return out


# ---------------------------------------------------------------------------
# Driver

def parse_size(s: str) -> int:
    s = s.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(s[-1], 1)
    return int(float(s.rstrip("km")) * mult)


def count_old(db: str, pg_url: str, url: str, cutoff: datetime) -> int:
    if db == "sqlite":
        with sqlite3.connect(url.split(":///", 1)[1]) as con:
            c = cutoff.replace(tzinfo=None).isoformat(" ", "microseconds")
            return con.execute(f"SELECT count(*) FROM {TABLE} WHERE created_at < ?", [c]).fetchone()[0]
    conn = pg_connect(pg_url, RUN_DB)
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {TABLE} WHERE created_at < %s", [cutoff])
        n = cur.fetchone()[0]
    conn.close()
    return n


def bench_one(db: str, n: int, args: argparse.Namespace, work: Path) -> dict:
    anchor = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    cutoff = (anchor - timedelta(days=30)).isoformat()
    t0 = time.perf_counter()
    if db == "pg":
        build_pg(args.pg_url, n, anchor, args.shuffle)
    else:
        tpl = work / "template.db"
        tpl.unlink(missing_ok=True)
        build_sqlite(tpl, n, anchor, args.shuffle)
    print(f"\n== {'PostgreSQL' if db == 'pg' else 'SQLite'}, {n:,} rows: built in {time.perf_counter() - t0:.1f} s",
          flush=True)

    def restore() -> str:
        return restore_pg(args.pg_url) if db == "pg" else restore_sqlite(work / "template.db", work / "run.db")

    url = restore()
    dash = time_dashboard(url, cutoff, work)
    expect = count_old(db, args.pg_url, url, anchor - timedelta(days=30))
    approaches = [a for a in args.approaches if not (a == "naive" and n > 3_000_000)]
    runs: dict[str, list[dict]] = {a: [] for a in approaches}
    for rep in range(args.repeat):
        order = approaches if rep % 2 == 0 else approaches[::-1]
        for a in order:
            if runs[a] or a != order[0] or rep:  # the first approach reuses the first restore
                url = restore()
            r = measure(a, url, cutoff, work, expect)
            runs[a].append(r)
            print(f"   rep {rep + 1} {a:<10} {r['wall']:7.2f} s wall {r['cpu']:6.2f} s cpu {r['peak']:7.1f} MB peak"
                  f" {r['backup']:7.1f} MB backup  (load {os.getloadavg()[0]:.1f})", flush=True)
    med = {a: {k: statistics.median(x[k] for x in rs) for k in ("wall", "cpu", "peak", "backup")}
           for a, rs in runs.items()}
    print(f"   {expect:,} rows older than the cutoff; medians of {args.repeat}")
    print(f"   {'approach':<10} {'wall s':>8} {'rows/s':>10} {'peak MB':>9} {'backup MB':>10} {'cpu s':>7}")
    for a, m in med.items():
        print(f"   {a:<10} {m['wall']:8.2f} {expect / m['wall']:10,.0f} {m['peak']:9.1f} {m['backup']:10.1f}"
              f" {m['cpu']:7.2f}")
    if "core" in med and "limit" in med:
        print(f"   core/limit: wall {med['core']['wall'] / med['limit']['wall']:.2f}x, "
              f"backup {med['core']['backup'] / med['limit']['backup']:.2f}x")
    if "core" in med and "limit-isal" in med:
        print(f"   core/limit-isal (the limit with core's compressor, for reference): wall "
              f"{med['core']['wall'] / med['limit-isal']['wall']:.2f}x, "
              f"backup {med['core']['backup'] / med['limit-isal']['backup']:.2f}x")
    if "core" in med and "core-store" in med:
        print(f"   core-store/core (with BACKUP_STORE on loopback): wall "
              f"{med['core-store']['wall'] / med['core']['wall']:.2f}x")
    if "core" in med and "naive" in med:
        print(f"   naive/core: wall {med['naive']['wall'] / med['core']['wall']:.1f}x")
    print(f"   dashboard: stats {dash['stats'] * 1000:.0f} ms, preview {dash['preview'] * 1000:.0f} ms "
          f"(median of 3; index warnings: {dash['stats_warnings'] + dash['preview_warnings']})")
    return {"med": med, "dash": dash}


def verdicts(results: dict) -> list[str]:
    lines = []

    def check(ok: bool, text: str) -> None:
        lines.append(f"{'PASS' if ok else 'FAIL'}  {text}")

    for (db, n), r in sorted(results.items()):
        m, label = r["med"], f"{'PostgreSQL' if db == 'pg' else 'SQLite'} {n:,}"
        if "core" in m:
            check(m["core"]["peak"] < 100, f"{label}: core peak {m['core']['peak']:.1f} MB < 100 MB")
        if n == 1_000_000 and "core" in m and "limit" in m:
            w = m["core"]["wall"] / m["limit"]["wall"]
            check(w <= (1.25 if db == "pg" else 1.5), f"{label}: core/limit wall {w:.2f}x <= "
                  f"{'1.25' if db == 'pg' else '1.5'}x")
            if db == "pg":
                b = m["core"]["backup"] / m["limit"]["backup"]
                check(b <= 1.10, f"{label}: core/limit backup {b:.2f}x <= 1.10x")
        if n == 1_000_000 and db == "pg" and "core" in m and "core-store" in m:
            x = m["core-store"]["wall"] / m["core"]["wall"]
            check(x <= 1.3, f"{label}: core with a store / without {x:.2f}x <= 1.3x")
        if n == 1_000_000 and db == "pg" and "core" in m and "naive" in m:
            x = m["naive"]["wall"] / m["core"]["wall"]
            check(x >= 5, f"{label}: naive/core {x:.1f}x >= 5x")
        if n == 1_000_000 and db == "pg":
            for q in ("stats", "preview"):
                check(r["dash"][q] < 1, f"{label}: {q} {r['dash'][q] * 1000:.0f} ms < 1000 ms")
    for db in ("pg", "sqlite"):
        small, big = results.get((db, 100_000)), results.get((db, 3_000_000))
        if small and big and "core" in small["med"] and "core" in big["med"]:
            a, b = small["med"]["core"]["peak"], big["med"]["core"]["peak"]
            check(b <= 1.10 * a, f"{db}: core peak flat, 3M {b:.1f} MB <= 1.10 x 100k {a:.1f} MB")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100k,1m", help="comma list, e.g. 100k,1m,3m,10m")
    ap.add_argument("--db", choices=["pg", "sqlite", "both"], default="both")
    ap.add_argument("--repeat", type=int, default=1, help="repetitions (medians are printed)")
    ap.add_argument("--approaches", default=",".join(APPROACHES))
    ap.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL",
                                                       "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
                    help="an admin connection; the benchmark creates and drops databases lrc_bench*")
    ap.add_argument("--shuffle", action="store_true", help="timestamps in random id order (default: log order)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--db-url", help=argparse.SUPPRESS)
    ap.add_argument("--cutoff", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.db_url, args.cutoff, args.out)))
        return
    args.approaches = [a for a in args.approaches.split(",") if a]
    if set(args.approaches) - set(APPROACHES) - set(EXTRA):
        ap.error(f"--approaches: choose from {', '.join(APPROACHES + EXTRA)}")
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    dbs = ["pg", "sqlite"] if args.db == "both" else [args.db]
    print(f"bench: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}; {' '.join(sys.argv)}", flush=True)
    if "pg" in dbs:
        conn = pg_connect(args.pg_url)
        with conn.cursor() as cur:
            cur.execute("SELECT version()")
            print(f"bench: {cur.fetchone()[0]}")
        conn.close()
    work = Path(tempfile.mkdtemp(prefix="lrc-bench-"))
    results: dict = {}
    try:
        for db in dbs:
            for n in sizes:
                results[(db, n)] = bench_one(db, n, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if "pg" in dbs:
            try:
                pg_admin(args.pg_url, f"DROP DATABASE IF EXISTS {RUN_DB} WITH (FORCE)",
                         f"DROP DATABASE IF EXISTS {TPL_DB} WITH (FORCE)")
            except Exception as exc:  # report, but do not hide the original error
                print(f"could not drop the benchmark databases: {exc}", file=sys.stderr)
    print("\n" + "\n".join(verdicts(results) or ["(no targets apply to these sizes)"]))


if __name__ == "__main__":
    main()
