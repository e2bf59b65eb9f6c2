"""Realistic ``conversation_log`` tables for bench.py, built fast and restored per run.

PostgreSQL: rows generated in Python as CSV and loaded with ``COPY … FROM STDIN`` into
database ``lrc_bench`` (the template); each measured run gets a fresh copy with
``CREATE DATABASE lrc_bench_run TEMPLATE lrc_bench STRATEGY FILE_COPY``.
SQLite: ``executemany`` in 50k-row transactions into a template file that is copied.

Rows: id order follows time, as in a log (timestamps uniform over the 90 days before
the anchor, so two thirds are older than a 30-day cutoff); messages of varying length
(~400 characters on average; English and Korean words, stock phrases, commas, quotes,
CR LF and LF, emoji), 1% empty and 1% NULL; JSON meta (10% NULL); some NULL user ids;
token counts NULL for user turns. An index on created_at, primary key id.

Calibrated on the table of the anchor measurements behind issue 6 (docs/benchmarks.md: 465 MB of CSV and 138 MB of gzip
level 1 for 666k rows): ~700 bytes per CSV row, gzip level 1 ratio ~0.29. Row shape
matters: the naive path costs per row, COPY and gzip per byte (see docs/benchmarks.md).
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

TABLE = "conversation_log"
TPL_DB, RUN_DB = "lrc_bench", "lrc_bench_run"

KO_SYL = ("가나다라마바사아자차카타파하고노도로모보소오조초코토포호구누두루무부수우주추기니디리미비시이지치"
          "개내대래매배새재해어서저거너더러머버요는은을를에서의로과와한합니다했습까요죠네")
EN_COMMON = ("the a to and of I you it is in for that on my this with can be what how please help "
             "order summary data model error refund delivery password link translate meeting tomorrow code "
             "python function return value thanks update shipping account review draft letter bullet points "
             "article database query index cleanup retention backup report schedule invoice customer support "
             "ticket issue version release").split()
EN_SYL = ["con", "ver", "ing", "ment", "pro", "re", "de", "tion", "al", "er", "in", "com", "ex", "ly", "pre",
          "ate", "ble", "ist", "ous", "ive", "sta", "tra", "ple", "mis", "un", "for", "per", "ca", "lo", "mi"]
EXTRAS = [", ", ", ", ". ", "? ", "! ", ' "', '" ', "'", "\n", "\r\n", " 😊", " 🎉", " 🙏", " 🐛", ": ", " (", ") "]
KOREAN_WORDS = 0.15  # share of Korean words: ~400 chars are ~480 UTF-8 bytes, as in the anchor table (docs/benchmarks.md)
PHRASES, PHRASE_SHARE = 300, 0.25


def message_pool(rnd: random.Random, n: int) -> list[str]:
    """``n`` distinct chat messages, ~400 characters on average (lognormal, 8 to 2000).

    English words with Korean words and phrases mixed in (97% of messages hold Korean),
    commas, quotes, CR LF and LF, emoji. Words follow a Zipf-like law, as in chat text.
    Calibrated on the anchor table (docs/benchmarks.md): ~700 bytes per CSV row, gzip level 1 ratio ~0.3.
    """
    ko = ["".join(rnd.choice(KO_SYL) for _ in range(rnd.randint(1, 3))) for _ in range(1500)]
    en = EN_COMMON + ["".join(rnd.choice(EN_SYL) for _ in range(rnd.randint(1, 3))) for _ in range(1500)]
    ends = ["", "", "는", "를", "에서", "의", "로", "가", "이", "요", "습니다", "했어요", "인가요"]

    def word(share: float) -> str:
        if rnd.random() < share:
            return ko[int(len(ko) * rnd.random() ** 4)] + rnd.choice(ends)
        return en[int(len(en) * rnd.random() ** 4)]

    # stock phrases (greetings, assistant boilerplate) recur across messages
    phrases = [" ".join(word(KOREAN_WORDS) for _ in range(rnd.randint(3, 10))) for _ in range(PHRASES)]
    pool = []
    for _ in range(n):
        target = int(min(2000, max(8, rnd.lognormvariate(5.87, 0.5))))  # mean ~400
        share = 0.0 if rnd.random() < 0.03 else KOREAN_WORDS
        parts, length = [], 0
        while length < target:
            w = phrases[int(PHRASES * rnd.random() ** 2)] if rnd.random() < PHRASE_SHARE else word(share)
            sep = rnd.choice(EXTRAS) if rnd.random() < 0.12 else " "
            parts.append(w + sep)
            length += len(w) + len(sep)
        pool.append("".join(parts).strip())
    return pool


def meta_pool(rnd: random.Random, n: int) -> list[str]:
    return [json.dumps({"client": rnd.choice(["web", "ios", "android"]), "lang": rnd.choice(["ko", "en"]),
                        "latency_ms": rnd.randint(80, 4000), "tags": rnd.sample(["faq", "환불", "배송", "bug"], 2),
                        "note": rnd.choice(["", '쉼표, "따옴표"', "line\nbreak", None])}, ensure_ascii=False)
            for _ in range(n)]


def csv_field(v: object) -> str:
    if v is None:
        return ""
    return '"' + v.replace('"', '""') + '"' if isinstance(v, str) else str(v)


def gen_rows(n: int, anchor: datetime, *, pg: bool, shuffle: bool, seed: int = 42):
    """Yield chunks of rows (PostgreSQL: CSV text; SQLite: tuples) in id order.

    Timestamps cover 90 days before ``anchor``; by default they grow with the id, as
    in a log (``shuffle``: random).  1% empty messages, 1% NULL, 10% NULL meta.
    """
    rnd = random.Random(seed)
    msgs, metas = message_pool(rnd, 10007), meta_pool(rnd, 997)
    enc = csv_field if pg else (lambda v: v)
    msgs, metas = [enc(m) for m in msgs], [enc(m) for m in metas]
    empty, null = enc(""), enc(None)
    start = (anchor - timedelta(days=90)).replace(tzinfo=UTC if pg else None)
    step = 90 * 86400 / n
    models = [enc(m) for m in ("gpt-4o-mini", "claude-sonnet", "llama-3-70b", None)]
    roles = [enc("user"), enc("assistant")]
    users = [enc(f"user-{u}") for u in range(500)]
    chunk: list = []
    session = ""
    for i in range(n):
        if i % 6 == 0:
            session = f"{rnd.getrandbits(128):032x}"
        r = rnd.random()
        msg = empty if r < 0.01 else null if r < 0.02 else msgs[rnd.randrange(10007)]
        model = null if i % 2 == 0 else models[rnd.randrange(4)]
        pt, ct = (rnd.randrange(5, 800), rnd.randrange(5, 1200)) if model != null else (null, null)
        sec = rnd.random() * 90 * 86400 if shuffle else (i + rnd.random()) * step
        ts = (start + timedelta(seconds=sec)).isoformat(" ", "microseconds")
        row = (i + 1, session, null if r > 0.95 else users[rnd.randrange(500)], roles[i % 2], msg, model, pt, ct,
               null if r > 0.9 else metas[rnd.randrange(997)], ts)
        chunk.append(f"{row[0]},{session},{row[2]},{row[3]},{msg},{model},{pt},{ct},{row[8]},{ts}\n" if pg else row)
        if len(chunk) == 50_000:
            yield "".join(chunk) if pg else chunk
            chunk = []
    if chunk:
        yield "".join(chunk) if pg else chunk


def pg_connect(url: str, db: str | None = None, autocommit: bool = True):
    """A psycopg2 connection from a SQLAlchemy URL (to database ``db`` if given)."""
    import psycopg2
    u = urlsplit(url)
    conn = psycopg2.connect(host=u.hostname, port=u.port or 5432, user=unquote(u.username or ""),
                            password=unquote(u.password or "") or None, dbname=db or u.path.lstrip("/"))
    conn.autocommit = autocommit
    return conn


def pg_admin(url: str, *sql: str) -> None:
    conn = pg_connect(url)
    with conn.cursor() as cur:
        for s in sql:
            cur.execute(s)
    conn.close()


def sql_url(url: str, db: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + db))


def build_pg(url: str, n: int, anchor: datetime, shuffle: bool) -> None:
    pg_admin(url, f"DROP DATABASE IF EXISTS {RUN_DB} WITH (FORCE)", f"DROP DATABASE IF EXISTS {TPL_DB} WITH (FORCE)",
             f"CREATE DATABASE {TPL_DB}")
    conn = pg_connect(url, TPL_DB, autocommit=False)
    with conn.cursor() as cur:
        cur.execute(f"""CREATE TABLE {TABLE} (id bigint NOT NULL, session_id varchar(36) NOT NULL,
            user_id varchar(64), role varchar(16) NOT NULL, message text, model varchar(64),
            prompt_tokens integer, completion_tokens integer, meta jsonb, created_at timestamptz NOT NULL)""")
        for chunk in gen_rows(n, anchor, pg=True, shuffle=shuffle):
            cur.copy_expert(f"COPY {TABLE} FROM STDIN WITH (FORMAT csv)", io.BytesIO(chunk.encode()))
        cur.execute(f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id)")
        cur.execute(f"CREATE INDEX ix_{TABLE}_created_at ON {TABLE} (created_at)")
    conn.commit()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"VACUUM (FREEZE, ANALYZE) {TABLE}")
    conn.close()


def restore_pg(url: str) -> str:
    pg_admin(url, f"DROP DATABASE IF EXISTS {RUN_DB} WITH (FORCE)",
             f"CREATE DATABASE {RUN_DB} TEMPLATE {TPL_DB} STRATEGY FILE_COPY")
    conn = pg_connect(url, RUN_DB)
    with conn.cursor() as cur:  # warm the OS cache, then start from a clean checkpoint
        cur.execute(f"SELECT count(*), sum(length(message)), max(meta::text) FROM {TABLE}")
        cur.execute("CHECKPOINT")
    conn.close()
    os.sync()  # write back the copied files now, not during the measured run
    return sql_url(url, RUN_DB)


def restore_sqlite(template: Path, run: Path) -> str:
    """A fresh copy of the template (the copy also warms the OS cache); its SQLAlchemy URL."""
    for p in run.parent.glob(run.name + "*"):
        p.unlink()
    shutil.copyfile(template, run)
    os.sync()  # write back the copy now, not during the measured run
    return f"sqlite:///{run}"


def build_sqlite(path: Path, n: int, anchor: datetime, shuffle: bool) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute(f"""CREATE TABLE {TABLE} (id INTEGER NOT NULL PRIMARY KEY, session_id VARCHAR(36) NOT NULL,
        user_id VARCHAR(64), role VARCHAR(16) NOT NULL, message TEXT, model VARCHAR(64), prompt_tokens INTEGER,
        completion_tokens INTEGER, meta JSON, created_at DATETIME NOT NULL)""")
    for chunk in gen_rows(n, anchor, pg=False, shuffle=shuffle):
        con.execute("BEGIN")
        con.executemany(f"INSERT INTO {TABLE} VALUES (?,?,?,?,?,?,?,?,?,?)", chunk)
        con.execute("COMMIT")
    con.execute(f"CREATE INDEX ix_{TABLE}_created_at ON {TABLE} (created_at)")
    con.execute("ANALYZE")
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()


