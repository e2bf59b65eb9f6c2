"""Time the dashboard's Overview and Preview pages (AppTest, in-process) on a big PostgreSQL table.

    .venv/bin/python bench/bench_pages.py --rows 1000000 [--keep]

Builds database lrc_bench_pages with N demo rows (once; --keep leaves it), then renders
each page 3 times with AppTest and prints the median wall time of a full script run
(queries + Altair/dataframe serialisation). Overview is timed cold (caches
cleared: the stats query runs) and warm (st.cache_data hit, ttl 60 s).
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from streamlit import config as st_config  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from core import demo_data, load_settings, preview, stats  # noqa: E402
from core.db import dispose_engines  # noqa: E402
from ui.data import clear_caches  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--rows", type=int, default=1_000_000)
ap.add_argument("--admin", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
ap.add_argument("--keep", action="store_true")
a = ap.parse_args()
name = "lrc_bench_pages"
admin = create_engine(a.admin, isolation_level="AUTOCOMMIT")
url = a.admin.rsplit("/", 1)[0] + "/" + name
with admin.connect() as c:
    exists = c.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
    if not exists:
        c.execute(text(f'CREATE DATABASE "{name}"'))
settings = load_settings({"database_url": url, "backup_dir": "/tmp/lrc_bench/backups"}, environ={}, env_file=None)
eng = create_engine(url)
with eng.connect() as c:
    have = c.execute(text("SELECT to_regclass('conversation_log') IS NOT NULL")).scalar() and \
        c.execute(text("SELECT count(*) FROM conversation_log")).scalar()
if have != a.rows:
    if have:
        with eng.begin() as c:
            c.execute(text("DROP TABLE conversation_log"))
    t = time.monotonic()
    demo_data(settings, rows=a.rows, days=90, seed=1)
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE conversation_log"))
    print(f"built {a.rows:,} rows in {time.monotonic() - t:.0f} s", flush=True)

os.environ.update(DATABASE_URL=url, BACKUP_DIR="/tmp/lrc_bench/backups")
os.environ.pop("DASHBOARD_PASSWORD", None)
st_config.set_option("server.address", "localhost")

def med(f, n=3):
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        xs.append(time.perf_counter() - t)
    return statistics.median(xs)

print(f"core.stats:   {med(lambda: stats(settings)) * 1000:7.0f} ms")
print(f"core.preview: {med(lambda: preview(settings, retention_days=30)) * 1000:7.0f} ms")
at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120).run()
assert not at.exception, at.exception


def page(p, cold=False):
    def go():
        if cold:
            clear_caches()
        at.switch_page(p).run()
        assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    return go
print(f"Overview page render: {med(page('app_pages/overview.py', cold=True)) * 1000:7.0f} ms (cold: stats queried)")
print(f"Overview page render: {med(page('app_pages/overview.py')) * 1000:7.0f} ms (warm: stats from st.cache_data)")
print(f"Preview page render:  {med(page('app_pages/preview.py')) * 1000:7.0f} ms (count, estimate, sample)")
print("rows to delete at 30 days:", preview(settings, retention_days=30).rows_to_delete)
if not a.keep:
    eng.dispose()
    dispose_engines()
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
