"""Every spelling of one table resolves to one identity (lock key, run-record key)."""

from __future__ import annotations

import os
import sqlite3

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from core.identity import postgres_identity, sqlite_identity, sqlite_lock_path


def _pg(url: str, host: str, port: int | None):
    u = make_url(url)
    kwargs = {"host": host, "user": u.username, "dbname": u.database}
    if port:
        kwargs["port"] = port
    return psycopg2.connect(**kwargs)


def test_postgres_spellings_of_one_table_share_lock_and_key(pg_url):
    admin = _pg(pg_url, "127.0.0.1", 5432)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("CREATE TABLE conversation_log (id int PRIMARY KEY)")
        cur.execute("CREATE SCHEMA other")
        cur.execute("CREATE TABLE other.conversation_log (id int PRIMARY KEY)")
    seen = set()
    for host, port, schema in [("127.0.0.1", 5432, None), ("localhost", None, None),
                               ("localhost", 5432, "public"), ("127.0.0.1", None, "public")]:
        conn = _pg(pg_url, host, port)
        ident = postgres_identity(conn, schema=schema, table="conversation_log")
        conn.close()
        seen.add((ident.key, ident.lock_key))
    assert seen == {("public.conversation_log", next(iter(seen))[1])}
    other = postgres_identity(admin, schema="other", table="conversation_log")
    assert other.lock_key != next(iter(seen))[1] and other.key == "other.conversation_log"
    with pytest.raises(LookupError):
        postgres_identity(admin, schema=None, table="no_such_table")
    admin.close()


def test_sqlite_spellings_of_one_table_share_lock_file_and_key(tmp_path, monkeypatch):
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE Conversation_Log (id INTEGER PRIMARY KEY)")
    conn.commit()
    link = tmp_path / "link.db"
    os.symlink(db, link)
    monkeypatch.chdir(tmp_path)
    paths = set()
    for path, table in [(str(db), "conversation_log"), ("data/app.db", "CONVERSATION_LOG"),
                        (str(link), "Conversation_Log"), ("./data/../data/app.db", "conversation_log")]:
        c = sqlite3.connect(path)
        ident = sqlite_identity(c, database=path, table=table)
        c.close()
        paths.add((sqlite_lock_path(ident), ident.key, ident.server))
    assert len(paths) == 1
    lock, key, _ = paths.pop()
    assert key == "Conversation_Log" and lock.parent == db.parent
    with pytest.raises(LookupError):
        sqlite_identity(conn, database=str(db), table="missing")
