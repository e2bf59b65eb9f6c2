"""What the catalog says about a partitioned log table, the partition journal, and restoring
into dropped ranges (PostgreSQL). Read-only except :func:`ensure_journal` and restores.
See :mod:`core.partitions` for the detach → copy → drop path itself."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from .db import TableInfo, qualified
from .errors import BadSetting
from .models import PartitionPlan, to_jsonable
from .shape import cutoff_value, wall_time
from .timefmt import parse_db_timestamp

JOURNAL_TABLE = "retention_partitions"

_BOUND = re.compile(r"^FOR VALUES FROM \((.+)\) TO \((.+)\)$")


@dataclass(frozen=True)
class Partition:
    """One child of the log table, as the catalog describes it."""

    schema: str
    name: str
    bound: str  # pg_get_expr(relpartbound): "FOR VALUES FROM (…) TO (…)" or "DEFAULT"
    lower: datetime | None  # None: MINVALUE (or the default partition)
    upper: datetime | None  # None: MAXVALUE (or the default partition)
    is_default: bool
    sub_partitioned: bool
    rows_estimate: int  # pg_class.reltuples (an estimate; -1: never analyzed)

    @property
    def display_name(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Layout:
    """How the table is partitioned: ``strategy`` r/l/h, ``key`` its column (None: an expression)."""

    strategy: str
    key: str | None
    children: tuple[Partition, ...]

    @property
    def range_on(self) -> str | None:
        return self.key if self.strategy == "r" else None

    @property
    def has_default(self) -> bool:
        return any(p.is_default for p in self.children)

    def wholly_older(self, info: TableInfo, cutoff: datetime) -> list[Partition]:
        """Leaf range partitions whose every possible row is older than ``cutoff``.

        Bounds of a zone-less column are wall times in LOG_TIMESTAMP_TIMEZONE (read here as
        if UTC), so they are compared with the cutoff's wall time in that zone, exactly as
        the batches' predicate compares rows (core/shape.py).
        """
        col = info.ts_info
        limit = cutoff if not (col.naive_timestamp or col.is_date) else (
            wall_time(cutoff, info.zone).replace(tzinfo=UTC))
        return [p for p in self.children if not p.is_default and not p.sub_partitioned
                and p.upper is not None and p.upper <= limit]


def _literal_time(text: str) -> datetime | None:
    """A bound literal ('2024-01-01 00:00:00+00', MINVALUE) as an aware UTC datetime (None for MIN/MAXVALUE)."""
    text = text.strip()
    if text.upper() in ("MINVALUE", "MAXVALUE"):
        return None
    return parse_db_timestamp(text.strip("'"))


def describe_partitions(dbapi: Any, info: TableInfo) -> Layout | None:
    """The partitioning of the log table, or None when it is not partitioned. Reads only the catalog.

    ``dbapi``: a psycopg2 connection; its session time zone is set to UTC for this read
    (bounds of timestamptz columns print in the session's zone). Ends its transaction.
    """
    if info.dialect != "postgresql":
        return None
    with dbapi.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        cur.execute(
            "SELECT pt.partstrat, pt.partnatts, a.attname FROM pg_partitioned_table pt "
            "JOIN pg_class c ON c.oid = pt.partrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = pt.partattrs[0] "
            "WHERE c.relname = %s AND n.nspname = COALESCE(%s, current_schema())",
            [info.name, info.schema],
        )
        row = cur.fetchone()
        if row is None:
            dbapi.rollback()
            return None
        strategy, natts, key = row
        cur.execute(
            "SELECT n.nspname, c.relname, pg_get_expr(c.relpartbound, c.oid), c.relkind = 'p', c.reltuples "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname",
            [f"{quote_pg(info.schema)}.{quote_pg(info.name)}" if info.schema else quote_pg(info.name)],
        )
        kids = cur.fetchall()
    dbapi.rollback()
    children = []
    for schema, name, bound, sub, tuples in kids:
        m = _BOUND.match(bound or "") if strategy == "r" and natts == 1 else None
        lower, upper = (_literal_time(m.group(1)), _literal_time(m.group(2))) if m else (None, None)
        children.append(Partition(schema, name, bound or "", lower, upper, bound == "DEFAULT", bool(sub),
                                  int(tuples)))
    return Layout(strategy, key if natts == 1 else None, tuple(children))


def quote_pg(name: str) -> str:
    """PostgreSQL identifier quoting for catalog lookups through to_regclass."""
    return '"' + name.replace('"', '""') + '"'


def partman_retention(dbapi: Any, info: TableInfo) -> str | None:
    """pg_partman's retention interval for the table ('3 months'), or None (not installed, not managed, off)."""
    with dbapi.cursor() as cur:
        cur.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                    "WHERE e.extname = 'pg_partman'")
        row = cur.fetchone()
        if row is None:
            dbapi.rollback()
            return None
        cur.execute(f"SELECT retention FROM {quote_pg(row[0])}.part_config WHERE parent_table = %s",
                    [f"{info.schema or 'public'}.{info.name}"])
        found = cur.fetchone()
    dbapi.rollback()
    return found[0] if found and found[0] else None


def check_partman(dbapi: Any, info: TableInfo) -> None:
    """Refuse a table whose pg_partman retention is on: it would drop old partitions unarchived."""
    retention = partman_retention(dbapi, info)
    if retention:
        raise BadSetting(
            "LOG_TABLE", info.display_name,
            f"pg_partman drops its partitions older than {retention} without a backup (part_config.retention); "
            "set it to NULL (UPDATE partman.part_config SET retention = NULL WHERE parent_table = "
            f"'{info.schema or 'public'}.{info.name}') so that this cleanup archives them first",
        )


# ---------------------------------------------------------------------------
# The journal


def ensure_journal(dbapi: Any, engine: Engine, schema: str | None) -> None:
    """Create ``retention_partitions`` if missing (in the history's schema). Commits."""
    table = qualified(engine, schema, JOURNAL_TABLE)
    with dbapi.cursor() as cur:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (run_id varchar(36) NOT NULL, parent text NOT NULL, "
            "part_schema text NOT NULL, part_name text NOT NULL, bound text NOT NULL, lower_ts timestamptz, "
            "upper_ts timestamptz, state varchar(20) NOT NULL, rows bigint, detached_by varchar(36) NOT NULL, "
            "detached_at timestamptz, dropped_at timestamptz, PRIMARY KEY (run_id, part_schema, part_name))"
        )
    dbapi.commit()


def journal_rows(dbapi: Any, engine: Engine, schema: str | None, **where: Any) -> list[dict[str, Any]]:
    """Journal rows matching ``where`` (column = value), oldest bound first; [] when there is no journal."""
    with dbapi.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", [qualified(engine, schema, JOURNAL_TABLE)])
        if not cur.fetchone()[0]:
            dbapi.rollback()
            return []
        cond = " AND ".join(f"{k} = %({k})s" for k in where) or "true"
        cur.execute(f"SELECT * FROM {qualified(engine, schema, JOURNAL_TABLE)} WHERE {cond} ORDER BY lower_ts",
                    where)
        cols = [d[0] for d in cur.description]
        out = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    dbapi.rollback()
    return out


def manifest_entries(engine: Engine, schema: str | None, run_id: str) -> list[dict[str, Any]]:
    """The partitions a run dropped, as its manifest records them (for restore). [] on SQLite."""
    if engine.dialect.name != "postgresql":
        return []
    raw = engine.raw_connection()
    try:
        rows = journal_rows(raw.driver_connection, engine, schema, run_id=run_id, state="dropped")
    finally:
        raw.close()
    return to_jsonable([{"name": f"{r['part_schema']}.{r['part_name']}", "bound": r["bound"],
                         "from": r["lower_ts"], "to": r["upper_ts"], "rows": int(r["rows"] or 0)} for r in rows])


# ---------------------------------------------------------------------------
# Restore


def recreate_for_restore(cur: Any, parent: str, entries: list[dict[str, Any]]) -> list[str]:
    """Inside a restore's transaction: recreate each manifest partition no partition covers now.

    ``cur``: a psycopg2 cursor; ``parent``: the quoted log table. A range an attached
    partition already covers is left alone (its rows route there). Returns the names
    created. Raises RestoreError (one line) when a partition cannot be recreated, e.g.
    because the default partition now holds rows of its range.
    """
    from psycopg2 import Error as PgError

    from .errors import RestoreError

    created = []
    for e in entries:
        schema, _, name = e["name"].partition(".")
        target = f"{quote_pg(schema)}.{quote_pg(name)}"
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", [target])
        if cur.fetchone()[0]:
            continue  # exists (attached again, or never dropped)
        cur.execute("SAVEPOINT recreate")
        try:
            cur.execute(f"CREATE TABLE {target} PARTITION OF {parent} {e['bound']}")
        except PgError as exc:
            cur.execute("ROLLBACK TO SAVEPOINT recreate")
            why = " ".join(str(exc.pgerror or exc).split()).removeprefix("ERROR: ")
            if "would overlap" in why:
                continue  # a partition made since (pg_partman premake, a restore) covers the range
            if "default partition" in why:
                raise RestoreError(f"cannot recreate partition {e['name']} ({e['bound']}): the default partition "
                                   "now holds rows of that range; move them out first") from None
            raise RestoreError(f"cannot recreate partition {e['name']} ({e['bound']}): {why}") from None
        cur.execute("RELEASE SAVEPOINT recreate")
        created.append(e["name"])
    return created


def plan_partitions(conn: Any, info: TableInfo, table: str, cutoff: datetime) -> tuple[PartitionPlan, ...]:
    """Per partition holding old rows: drop (wholly older than ``cutoff``) or delete, with exact counts.

    ``conn``: a SQLAlchemy connection; ``table``: the quoted log table. () when not partitioned.
    """
    layout = describe_partitions(conn.connection.driver_connection, info)
    if layout is None:
        return ()
    drop = {p.display_name for p in layout.wholly_older(info, cutoff)} if layout.range_on == info.timestamp_column else set()
    bounds = {p.display_name: p.bound for p in layout.children}
    ts = quote_pg(info.timestamp_column)
    rows = conn.exec_driver_sql(
        "SELECT n.nspname || '.' || c.relname, s.n FROM (SELECT tableoid, count(*) AS n FROM "
        f"{table} WHERE {ts} < %(c)s GROUP BY 1) s JOIN pg_class c ON c.oid = s.tableoid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace ORDER BY 1", {"c": cutoff_value(info, cutoff)}).all()
    return tuple(PartitionPlan(name, bounds.get(name, ""), "drop" if name in drop else "delete", int(n))
                 for name, n in rows)
