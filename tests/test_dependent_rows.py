"""Dependent rows are never lost silently: foreign keys, delete triggers, RLS (issue 12, cases 2-4).

Each refusal is checked by comparing the log table, the child tables, the history table
and the backup folder byte for byte before and after: a refused run writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from core import preview
from core.cleanup import run_cleanup
from core.db import dispose_engines, get_engine
from core.demo import demo_data
from core.errors import BadSetting, DependentRowsRefused
from core.models import RunStatus
from core.present import describe_run
from tests.support.databases import history_rows, kind_of, pg_admin, table_snapshot
from tests.support.invariants import backup_keys
from tests.support.processes import run_cli


def sql(settings, *statements: str) -> None:
    with get_engine(settings).begin() as conn:
        for s in statements:
            conn.execute(text(s))


def rows_of(settings, table: str) -> list[tuple]:
    with get_engine(settings).connect() as conn:
        return sorted(tuple(r) for r in conn.execute(text(f"SELECT * FROM {table}")))


def folder(path: str) -> dict[str, bytes]:
    root = Path(path)
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())} if root.exists() else {}


def state(settings, *tables: str) -> tuple:
    """Everything a refused run must leave exactly as it was."""
    return (table_snapshot(settings), [rows_of(settings, t) for t in tables], history_rows(settings),
            folder(settings.backup_dir))


def old_ids(settings, n: int) -> list[int]:
    with get_engine(settings).connect() as conn:
        return [r[0] for r in conn.execute(text(f"SELECT id FROM conversation_log ORDER BY id LIMIT {n}"))]


def child_table(settings, name: str, action: str, parent: str = "conversation_log") -> None:
    default = " DEFAULT 1" if action == "SET DEFAULT" else ""
    sql(settings, f"CREATE TABLE {name} (cid INTEGER PRIMARY KEY, ref BIGINT{default} "
                  f"REFERENCES {parent} ON DELETE {action})")


@pytest.mark.parametrize("action", ["CASCADE", "SET NULL", "SET DEFAULT"])
def test_run_that_would_change_child_rows_is_refused_and_writes_nothing(demo_settings, action):
    s = demo_settings
    child_table(s, "feedback", action)
    ids = old_ids(s, 3)
    sql(s, *(f"INSERT INTO feedback (cid, ref) VALUES ({i}, {k})" for i, k in enumerate(ids)))
    before = state(s, "feedback")
    proc = run_cli(s, "run", "--retention-days", "0", "--no-notify")
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "feedback" in line and f"ON DELETE {action}" in line
    assert state(s, "feedback") == before


def test_cascade_chain_of_two_is_refused_naming_every_table_it_reaches(demo_settings):
    s = demo_settings
    sql(s, "CREATE TABLE thread (tid INTEGER PRIMARY KEY, ref BIGINT REFERENCES conversation_log ON DELETE CASCADE)",
        "CREATE TABLE vote (vid INTEGER PRIMARY KEY, tid INTEGER REFERENCES thread ON DELETE CASCADE)")
    ident = old_ids(s, 1)[0]
    sql(s, f"INSERT INTO thread VALUES (1, {ident})", "INSERT INTO vote VALUES (1, 1)")
    before = state(s, "thread", "vote")
    with pytest.raises(DependentRowsRefused) as err:
        run_cleanup(s, retention_days=0, notify=False)
    assert "thread" in str(err.value) and "vote" in str(err.value)
    assert state(s, "thread", "vote") == before
    p = preview(s, retention_days=0)
    assert p.refusal and "thread" in p.refusal and any("refused" in w for w in p.warnings)


def test_delete_trigger_is_refused_unless_allowed_and_then_recorded(demo_settings):
    s = demo_settings
    sql(s, "CREATE TABLE deleted_log (id BIGINT)")
    if kind_of(s) == "postgresql":
        sql(s, "CREATE FUNCTION note_delete() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN INSERT INTO deleted_log VALUES (OLD.id); RETURN OLD; END $$",
            "CREATE TRIGGER log_deleted AFTER DELETE ON conversation_log FOR EACH ROW EXECUTE FUNCTION note_delete()")
    else:
        sql(s, "CREATE TRIGGER log_deleted AFTER DELETE ON conversation_log "
               "BEGIN INSERT INTO deleted_log VALUES (OLD.id); END")
    before = state(s, "deleted_log")
    proc = run_cli(s, "run", "--retention-days", "0", "--no-notify")
    assert proc.returncode == 2 and "trigger log_deleted on conversation_log" in proc.stderr
    assert state(s, "deleted_log") == before
    assert any("log_deleted" in w for w in preview(s, retention_days=0).warnings)

    proc = run_cli(s, "run", "--retention-days", "0", "--no-notify", "--allow-delete-triggers", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "success" and any("log_deleted" in n for n in out["notes"])
    manifest = json.loads(Path(out["manifest_file"]).read_text())
    assert manifest["delete_triggers_fired"] == ["trigger log_deleted on conversation_log"]
    assert len(rows_of(s, "deleted_log")) == out["rows_deleted"] == len(before[0])
    with get_engine(s).connect() as conn:
        notes = conn.execute(text("SELECT notes FROM retention_runs WHERE run_id = :r"), {"r": out["run_id"]}).scalar()
    assert "log_deleted" in notes


@pytest.mark.parametrize("action", ["RESTRICT", "NO ACTION"])
def test_referenced_rows_are_kept_and_counted_and_the_rest_archived(demo_settings, action):
    s = demo_settings
    child_table(s, "feedback", action)
    kept = old_ids(s, 250)[::50]  # spread over several batches of 100
    sql(s, *(f"INSERT INTO feedback (cid, ref) VALUES ({i}, {k})" for i, k in enumerate(kept)))
    children = rows_of(s, "feedback")
    original = table_snapshot(s)
    p = preview(s, retention_days=0)
    assert (p.rows_to_delete, p.rows_skipped, p.refusal) == (len(original) - len(kept), len(kept), None)

    r = run_cleanup(s, retention_days=0, notify=False)
    assert r.status is RunStatus.SUCCESS
    assert (r.rows_deleted, r.rows_skipped) == (len(original) - len(kept), len(kept))
    left = table_snapshot(s)
    assert set(left) == {str(k) for k in kept} and all(left[k] == original[k] for k in left)
    assert rows_of(s, "feedback") == children
    archived = backup_keys(r.backup_file)
    assert len(archived) == len(set(archived)) and set(archived) == set(original) - set(left)  # exactly the unreferenced old rows, each once
    assert ("Rows skipped", f"{len(kept)} (still referenced)") in describe_run(r).facts

    again = run_cleanup(s, retention_days=0, notify=False)  # the next run skips them again, without failing
    assert (again.status, again.rows_deleted, again.rows_skipped) == (RunStatus.NOTHING_TO_DO, 0, len(kept))
    assert table_snapshot(s) == left
    history = {h["run_id"]: h for h in history_rows(s)}
    assert set(history) == {r.run_id, again.run_id}
    with get_engine(s).connect() as conn:
        skipped = dict(conn.execute(text("SELECT run_id, rows_skipped FROM retention_runs")).all())
    assert skipped == {r.run_id: len(kept), again.run_id: len(kept)}


def test_dry_run_reports_the_refusal_and_skipped_rows_without_writing_a_backup(demo_settings):
    s = demo_settings
    child_table(s, "feedback", "CASCADE")
    r = run_cleanup(s, retention_days=0, notify=False, dry_run=True)
    assert r.status is RunStatus.DRY_RUN and any("refused" in n and "feedback" in n for n in r.notes)
    assert folder(s.backup_dir) == {}


def test_archiving_dependents_is_refused_as_not_available_yet(settings):
    with pytest.raises(BadSetting, match="planned, not available yet"):
        settings.with_overrides(cleanup_dependents="archive")


def test_row_level_security_is_named_in_preview_and_run(pg_settings, pg_admin_url):
    s = pg_settings
    demo_data(s, rows=300, days=90, seed=3)
    db = make_url(s.database_url).database
    role = f"lrc_limited_{db[-12:]}"
    pg_admin(pg_admin_url, f"DROP ROLE IF EXISTS {role}", f"CREATE ROLE {role} LOGIN")
    sql(s, "ALTER TABLE conversation_log ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY even_only ON conversation_log USING (mod(id, 2) = 0)",
        f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}", f"GRANT ALL ON SCHEMA public TO {role}",
        f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    limited = s.with_overrides(database_url=make_url(s.database_url).set(username=role)
                               .render_as_string(hide_password=False))
    try:
        p = preview(limited, retention_days=0)
        assert p.rows_to_delete == 150 and any("row-level security" in w for w in p.warnings)
        r = run_cleanup(limited, retention_days=0, notify=False)
        assert r.rows_deleted == 150 and any("row-level security" in n for n in r.notes)
        assert len(table_snapshot(s)) == 150  # the rows it could not see are still there
        assert not any("row-level security" in w for w in preview(s, retention_days=0).warnings)  # the owner sees all
    finally:
        dispose_engines()
        sql(s, f"DROP OWNED BY {role}")
        dispose_engines()
        pg_admin(pg_admin_url, f"DROP ROLE IF EXISTS {role}")
