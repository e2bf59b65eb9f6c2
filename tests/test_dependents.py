"""Catalog reading of what a DELETE on the log table reaches: foreign keys, hooks, RLS."""

from __future__ import annotations

import sqlite3

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from core.dependents import find_dependents, skip_referenced_sql

PARENT = "CREATE TABLE conversation_log (id INTEGER PRIMARY KEY, created_at TIMESTAMP)"


def _child(action: str) -> str:
    clause = f" ON DELETE {action}" if action else ""
    return ("CREATE TABLE child (id INTEGER PRIMARY KEY, log_id INTEGER DEFAULT 0 "
            f"REFERENCES conversation_log (id){clause})")


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
        yield "sqlite", conn
        conn.close()
    else:
        url = request.getfixturevalue("pg_url")
        u = make_url(url)
        conn = psycopg2.connect(host=u.host, port=u.port, user=u.username, dbname=u.database)
        conn.autocommit = True
        yield "postgresql", conn
        conn.close()


def _exec(db, *sql: str) -> None:
    dialect, conn = db
    for s in sql:
        if dialect == "sqlite":
            conn.execute(s)
        else:
            with conn.cursor() as cur:
                cur.execute(s)


def _find(db):
    dialect, conn = db
    return find_dependents(conn, dialect=dialect, schema=None if dialect == "sqlite" else "public",
                           table="conversation_log")


@pytest.mark.parametrize("action", ["CASCADE", "SET NULL", "SET DEFAULT"])
def test_changing_foreign_key_is_a_refusal_naming_constraint_and_table(db, action):
    _exec(db, PARENT, _child(action))
    found = _find(db)
    line = found.refusal(allow_delete_triggers=False)
    assert line is not None and f"ON DELETE {action}" in line and "child" in line
    assert found.keeping == ()
    assert any(line in w for w in found.warnings(allow_delete_triggers=False))


@pytest.mark.parametrize("action", ["RESTRICT", "NO ACTION", ""])
def test_keeping_foreign_key_is_skipped_not_refused(db, action):
    _exec(db, PARENT, _child(action))
    found = _find(db)
    assert found.refusal(allow_delete_triggers=False) is None
    assert [fk.child for fk in found.keeping] == ["child"]
    assert found.keeping[0].child_columns == ("log_id",) and found.keeping[0].parent_columns == ("id",)


def test_cascade_chain_of_two_names_every_table_it_reaches(db):
    _exec(db, PARENT, _child("CASCADE"),
          "CREATE TABLE grandchild (id INTEGER PRIMARY KEY, child_id INTEGER REFERENCES child (id) ON DELETE CASCADE)")
    line = _find(db).refusal(allow_delete_triggers=False)
    assert line is not None and "child" in line and "grandchild" in line


def test_delete_trigger_is_refused_unless_allowed(db):
    dialect, _ = db
    _exec(db, PARENT, "CREATE TABLE side (id INTEGER)")
    if dialect == "sqlite":
        _exec(db, "CREATE TRIGGER wipe_side AFTER DELETE ON conversation_log BEGIN DELETE FROM side; END")
    else:
        _exec(db, "CREATE FUNCTION wipe() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN DELETE FROM side; "
                  "RETURN OLD; END $$",
              "CREATE TRIGGER wipe_side AFTER DELETE ON conversation_log FOR EACH ROW EXECUTE FUNCTION wipe()")
    found = _find(db)
    line = found.refusal(allow_delete_triggers=False)
    assert line is not None and "wipe_side" in line and "CLEANUP_ALLOW_DELETE_TRIGGERS" in line
    assert found.refusal(allow_delete_triggers=True) is None
    assert any("wipe_side" in w for w in found.warnings(allow_delete_triggers=True))


def test_insert_trigger_is_not_a_delete_hook(db):
    dialect, _ = db
    _exec(db, PARENT, "CREATE TABLE side (id INTEGER)")
    if dialect == "sqlite":
        _exec(db, "CREATE TRIGGER copy_new AFTER INSERT ON conversation_log BEGIN INSERT INTO side VALUES (1); END")
    else:
        _exec(db, "CREATE FUNCTION cp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
              "CREATE TRIGGER copy_new AFTER INSERT ON conversation_log FOR EACH ROW EXECUTE FUNCTION cp()")
    assert _find(db).delete_hooks == ()


def test_delete_rule_is_a_hook_on_postgresql(pg_url):
    u = make_url(pg_url)
    conn = psycopg2.connect(host=u.host, port=u.port, user=u.username, dbname=u.database)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(PARENT)
        cur.execute("CREATE TABLE side (id INTEGER)")
        cur.execute("CREATE RULE keep_copy AS ON DELETE TO conversation_log DO ALSO INSERT INTO side VALUES (OLD.id)")
    found = find_dependents(conn, dialect="postgresql", schema="public", table="conversation_log")
    conn.close()
    assert [(h.kind, h.name) for h in found.delete_hooks] == [("rule", "keep_copy")]


def test_row_level_security_is_seen_for_a_limited_role(pg_url):
    u = make_url(pg_url)
    role = f"lrc_rls_{u.database[-8:]}"
    admin = psycopg2.connect(host=u.host, port=u.port, user=u.username, dbname=u.database)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(PARENT)
        cur.execute(f"CREATE ROLE {role} LOGIN")
        cur.execute(f"GRANT SELECT, DELETE ON conversation_log TO {role}")
        cur.execute("ALTER TABLE conversation_log ENABLE ROW LEVEL SECURITY")
        cur.execute(f"CREATE POLICY only_even ON conversation_log TO {role} USING (id % 2 = 0)")
    try:
        assert not find_dependents(admin, dialect="postgresql", schema="public",
                                   table="conversation_log").row_security
        limited = psycopg2.connect(host=u.host, port=u.port, user=role, dbname=u.database)
        found = find_dependents(limited, dialect="postgresql", schema="public", table="conversation_log")
        limited.close()
        assert found.row_security
        assert any("row-level security" in w for w in found.warnings(allow_delete_triggers=False))
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP TABLE conversation_log")
            cur.execute(f"DROP ROLE {role}")
        admin.close()


def test_skip_predicate_keeps_exactly_the_referenced_rows(db):
    dialect, conn = db
    _exec(db, PARENT, _child("RESTRICT"),
          "INSERT INTO conversation_log (id) VALUES (1), (2), (3)",
          "INSERT INTO child (id, log_id) VALUES (10, 2)")
    found = _find(db)
    table = '"conversation_log"' if dialect == "sqlite" else '"public"."conversation_log"'
    where = skip_referenced_sql(found, table=table, quote=lambda n: '"' + n.replace('"', '""') + '"')
    _exec(db, f"DELETE FROM {table} WHERE {where}")
    if dialect == "sqlite":
        left = [r[0] for r in conn.execute("SELECT id FROM conversation_log ORDER BY id")]
    else:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM conversation_log ORDER BY id")
            left = [r[0] for r in cur.fetchall()]
    assert left == [2]
