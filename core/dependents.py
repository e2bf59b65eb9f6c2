"""What else a DELETE on the log table touches: foreign keys, delete triggers and rules, RLS.

A cleanup archives the log table's rows and nothing else, so a DELETE that would
change rows of other tables (``ON DELETE CASCADE``, ``SET NULL``, ``SET DEFAULT``, a
user trigger or rule that fires on DELETE) would lose data that is in no backup. Such
a run is refused before anything is written (docs/design.md, "Dependent rows").
Rows still referenced through ``RESTRICT``/``NO ACTION`` are kept: the batches skip
them with a ``NOT EXISTS`` predicate, so the copy and the DELETE agree on every row.

Everything here only reads the catalog. On SQLite foreign keys are read with
``PRAGMA foreign_key_list`` of every table whatever ``PRAGMA foreign_keys`` says:
another connection (the chat service's) may enforce them, and even where nothing
enforces them, deleting a referenced row leaves its children dangling.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import DatabaseError, map_exceptions

log = logging.getLogger(__name__)

# PostgreSQL pg_constraint.confdeltype codes, and the SQL words SQLite reports.
_PG_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
KEEPING_ACTIONS = frozenset({"NO ACTION", "RESTRICT"})  # the DELETE fails: referenced rows are skipped
_PG_TRIGGER_DELETE = 1 << 3  # TRIGGER_TYPE_DELETE in pg_trigger.tgtype
_SQLITE_DELETE_TRIGGER = re.compile(
    r"\bCREATE\s+(?:TEMP\w*\s+)?TRIGGER\b.*?\b(?:BEFORE|AFTER|INSTEAD\s+OF)?\s*DELETE\s+ON\b",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key of ``child`` (schema may be None) that references the log table."""

    name: str
    child_schema: str | None
    child: str
    child_columns: tuple[str, ...]
    parent_columns: tuple[str, ...]
    on_delete: str  # NO ACTION | RESTRICT | CASCADE | SET NULL | SET DEFAULT

    @property
    def child_display(self) -> str:
        return f"{self.child_schema}.{self.child}" if self.child_schema else self.child

    @property
    def keeps_rows(self) -> bool:
        """True when a DELETE of a referenced row fails instead of changing the child."""
        return self.on_delete in KEEPING_ACTIONS


@dataclass(frozen=True)
class DeleteHook:
    """A user trigger or rule that runs when rows of the log table are deleted."""

    kind: str  # "trigger" | "rule"
    name: str
    table: str


@dataclass(frozen=True)
class Dependents:
    """What a DELETE on the log table would reach beyond the rows it archives."""

    foreign_keys: tuple[ForeignKey, ...] = ()
    delete_hooks: tuple[DeleteHook, ...] = ()
    row_security: bool = False  # RLS filters what the connecting role sees of the table
    cascade_path: tuple[str, ...] = ()  # tables a CASCADE chain reaches, for the message

    @property
    def changing(self) -> tuple[ForeignKey, ...]:
        """Foreign keys whose ON DELETE action would change or remove rows of another table."""
        return tuple(fk for fk in self.foreign_keys if not fk.keeps_rows)

    @property
    def keeping(self) -> tuple[ForeignKey, ...]:
        """Foreign keys whose referenced rows must stay (RESTRICT / NO ACTION)."""
        return tuple(fk for fk in self.foreign_keys if fk.keeps_rows)

    def refusal(self, *, allow_delete_triggers: bool) -> str | None:
        """One line naming why a cleanup must not run, or None when it may.

        Names the first constraint or trigger and its table; a cascade chain is shown
        with every table it reaches.
        """
        if self.changing:
            fk = self.changing[0]
            reach = f" (reaching {' → '.join(self.cascade_path)})" if len(self.cascade_path) > 1 else ""
            more = f" and {len(self.changing) - 1} more" if len(self.changing) > 1 else ""
            return (f"foreign key {fk.name} on {fk.child_display} is ON DELETE {fk.on_delete}{reach}{more}: "
                    "deleting log rows would change rows of another table that are in no backup; "
                    "drop or change the constraint, or clean that table first")
        if self.delete_hooks and not allow_delete_triggers:
            hook = self.delete_hooks[0]
            more = f" and {len(self.delete_hooks) - 1} more" if len(self.delete_hooks) > 1 else ""
            return (f"{hook.kind} {hook.name} on {hook.table} fires on DELETE{more}: what it does is in no "
                    "backup; allow it with CLEANUP_ALLOW_DELETE_TRIGGERS=true (run --allow-delete-triggers)")
        return None

    def warnings(self, *, allow_delete_triggers: bool) -> tuple[str, ...]:
        """Lines for preview and the dashboard: the refusal, skipped rows' cause, RLS."""
        out = []
        refusal = self.refusal(allow_delete_triggers=allow_delete_triggers)
        if refusal:
            out.append(f"a cleanup would be refused: {refusal}")
        elif self.delete_hooks:
            names = ", ".join(f"{h.kind} {h.name}" for h in self.delete_hooks)
            out.append(f"delete triggers will fire (allowed by CLEANUP_ALLOW_DELETE_TRIGGERS): {names}")
        if self.keeping:
            names = ", ".join(f"{fk.name} on {fk.child_display}" for fk in self.keeping)
            out.append(f"rows still referenced through {names} are kept and counted as skipped")
        if self.row_security:
            out.append("row-level security applies to this role: other old rows may exist that it cannot see, "
                       "and they are neither counted nor archived")
        return tuple(out)


def run_notes(dependents: Dependents, *, allow_delete_triggers: bool) -> tuple[str, ...]:
    """Lines a run records in its result and history: delete triggers that fired, RLS."""
    out = []
    if dependents.delete_hooks and allow_delete_triggers:
        out.append("delete triggers fired (CLEANUP_ALLOW_DELETE_TRIGGERS): "
                   + ", ".join(f"{h.kind} {h.name} on {h.table}" for h in dependents.delete_hooks))
    if dependents.row_security:
        out.append("row-level security applies to this role: other old rows may exist that it cannot see; "
                   "they were neither counted nor archived")
    return tuple(out)


def table_dependents(engine: Any, info: Any) -> Dependents:
    """:func:`find_dependents` for the log table of ``info`` (a db.TableInfo), on a pooled connection.

    Reads only. Raises DatabaseError (translated driver errors).
    """
    with map_exceptions(), engine.connect() as conn:
        try:
            return find_dependents(conn.connection.driver_connection, dialect=info.dialect, schema=info.schema,
                                   table=info.name)
        except LookupError as exc:
            raise DatabaseError(f"cannot read the catalog of {info.display_name}: {exc}") from None


def skip_referenced_sql(dependents: Dependents, *, table: str, quote: Callable[[str], str]) -> str:
    """``NOT EXISTS (…)`` terms (joined by AND; '' when none) that keep referenced rows.

    ``table`` is the log table's quoted name as the batch statements spell it, so the
    correlated subqueries work in SELECT, COPY (SELECT …) and DELETE alike.
    """
    terms = []
    for i, fk in enumerate(dependents.keeping):
        child = f"{quote(fk.child_schema)}.{quote(fk.child)}" if fk.child_schema else quote(fk.child)
        alias = f"lrc_ref{i}"
        match = " AND ".join(
            f"{alias}.{quote(c)} = {table}.{quote(p)}" for c, p in zip(fk.child_columns, fk.parent_columns, strict=True)
        )
        terms.append(f"NOT EXISTS (SELECT 1 FROM {child} AS {alias} WHERE {match})")
    return " AND ".join(terms)


def find_dependents(dbapi: Any, *, dialect: str, schema: str | None, table: str) -> Dependents:
    """Read the catalog for foreign keys, delete triggers/rules and RLS on the log table.

    ``dbapi`` is a DB-API connection (psycopg2 or sqlite3). Reads only; raises the
    driver's errors unchanged (the caller translates them).
    """
    if dialect == "sqlite":
        return _sqlite(dbapi, table)
    return _postgres(dbapi, schema, table)


# ---------------------------------------------------------------------------
# PostgreSQL


_PG_FKS = """
SELECT con.conname, cn.nspname, cc.relname, con.confdeltype, con.conrelid, con.confrelid,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i)
FROM pg_constraint con
JOIN pg_class cc ON cc.oid = con.conrelid
JOIN pg_namespace cn ON cn.oid = cc.relnamespace
WHERE con.contype = 'f' AND con.confrelid = %s AND con.conparentid = 0
ORDER BY con.conname
"""


def _pg_oid(cur: Any, schema: str | None, table: str) -> int:
    cur.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = %s AND (n.nspname = %s OR (%s IS NULL AND pg_table_is_visible(c.oid)))",
        (table, schema, schema),
    )
    row = cur.fetchone()
    if row is None:
        raise LookupError(f"no table {table!r}")
    return int(row[0])


def _postgres(dbapi: Any, schema: str | None, table: str) -> Dependents:
    with dbapi.cursor() as cur:
        oid = _pg_oid(cur, schema, table)
        fks = _pg_fks(cur, oid)
        path = _pg_cascade_path(cur, oid, table)
        cur.execute(
            "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE t.tgrelid = %s AND NOT t.tgisinternal AND t.tgenabled <> 'D' "
            "AND (t.tgtype & %s) <> 0 ORDER BY t.tgname",
            (oid, _PG_TRIGGER_DELETE),
        )
        hooks = [DeleteHook("trigger", name, rel) for name, rel in cur.fetchall()]
        cur.execute(
            "SELECT r.rulename, c.relname FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class "
            "WHERE r.ev_class = %s AND r.ev_type = '4' ORDER BY r.rulename",
            (oid,),
        )
        hooks += [DeleteHook("rule", name, rel) for name, rel in cur.fetchall()]
        cur.execute("SELECT row_security_active(%s)", (oid,))
        rls = bool(cur.fetchone()[0])
    dbapi.rollback()  # a read-only look: leave no transaction open on the caller's connection
    return Dependents(foreign_keys=tuple(fks), delete_hooks=tuple(hooks), row_security=rls,
                      cascade_path=tuple(path))


def _pg_fks(cur: Any, oid: int) -> list[ForeignKey]:
    cur.execute(_PG_FKS, (oid,))
    return [
        ForeignKey(name=name, child_schema=nsp, child=rel, child_columns=tuple(ck), parent_columns=tuple(pk),
                   on_delete=_PG_ACTIONS.get(code, code))
        for name, nsp, rel, code, _child_oid, _parent_oid, ck, pk in cur.fetchall()
    ]


def _pg_cascade_path(cur: Any, oid: int, table: str) -> list[str]:
    """Tables reached from the log table through CASCADE / SET actions, breadth first."""
    path, seen, frontier = [table], {oid}, [oid]
    while frontier:
        nxt = []
        for parent in frontier:
            cur.execute(_PG_FKS, (parent,))
            for _n, nsp, rel, code, child_oid, _p, _ck, _pk in cur.fetchall():
                if code in ("c", "n", "d") and child_oid not in seen:
                    seen.add(child_oid)
                    nxt.append(child_oid)
                    path.append(f"{nsp}.{rel}")
        frontier = nxt
    return path


# ---------------------------------------------------------------------------
# SQLite


def _sqlite(dbapi: Any, table: str) -> Dependents:
    tables = [r[0] for r in dbapi.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetchall()]
    pk_cols = [r[1] for r in sorted(
        (r for r in dbapi.execute(f"PRAGMA table_info({_sq(table)})").fetchall() if r[5]), key=lambda r: r[5])]
    fks, edges = [], {}
    for child in tables:
        rows = dbapi.execute(f"PRAGMA foreign_key_list({_sq(child)})").fetchall()
        by_id: dict[int, list[Any]] = {}
        for r in rows:  # id, seq, table, from, to, on_update, on_delete, match
            by_id.setdefault(r[0], []).append(r)
        for fk_id, parts in sorted(by_id.items()):
            parts.sort(key=lambda r: r[1])
            parent = parts[0][2]
            action = (parts[0][6] or "NO ACTION").upper()
            edges.setdefault(parent.lower(), []).append((child, action))
            if parent.lower() != table.lower():
                continue
            # "REFERENCES t" without columns means t's primary key.
            to = tuple(r[4] for r in parts) if all(r[4] for r in parts) else tuple(pk_cols)
            fks.append(ForeignKey(name=f"{child}_fk{fk_id}", child_schema=None, child=child,
                                  child_columns=tuple(r[3] for r in parts), parent_columns=to,
                                  on_delete=action))
    hooks = [
        DeleteHook("trigger", name, tbl)
        for name, tbl, sql in dbapi.execute(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? COLLATE NOCASE",
            (table,),
        ).fetchall()
        if sql and _SQLITE_DELETE_TRIGGER.search(sql)
    ]
    path, seen, frontier = [table], {table.lower()}, [table.lower()]
    while frontier:
        nxt = []
        for parent in frontier:
            for child, action in edges.get(parent, []):
                if action not in KEEPING_ACTIONS and child.lower() not in seen:
                    seen.add(child.lower())
                    nxt.append(child.lower())
                    path.append(child)
        frontier = nxt
    return Dependents(foreign_keys=tuple(fks), delete_hooks=tuple(hooks), cascade_path=tuple(path))


def _sq(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
