"""Partition-aware retention (PostgreSQL): wholly old partitions leave by detach and drop.

For a table range-partitioned on its timestamp column, a leaf partition whose upper
bound is at or before the cutoff holds only old rows. It leaves the table without a
DELETE (docs/design.md, "Partitions"):

1. **journal**: a row in ``retention_partitions`` (state ``detaching``, its bounds);
2. **detach**: ``DETACH PARTITION … CONCURRENTLY`` when the table has no default
   partition, else a plain ``DETACH`` in its own short transaction (which also marks the
   journal ``detached``), both under ``lock_timeout`` and retried;
3. **copy, verify, drop** in one transaction, as a batch: the detached table is locked,
   counted and COPYed into the run's backup as one gzip member (read back and fsynced),
   then ``DROP TABLE`` commits together with the run's journal (``committed_bytes``,
   ``rows_deleted``) and the partition's state ``dropped``.

A kill before the detach commits leaves the partition attached (a half-done concurrent
detach is FINALIZEd by the next run); after it, the detached table is in the journal and
the next run archives and drops it into its own backup; a drop commits only with the
journal of a fsynced member holding its rows. The partition that straddles the cutoff,
the default partition, sub-partitioned children and tables partitioned otherwise
(list, hash, another column) go through the ordinary batches.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from .backup.csvfile import header_line
from .backup.writer import MemberWriter
from .batches import BatchDone, Journal
from .db import TableInfo, qualified, quote
from .errors import BatchError, DatabaseError, map_exceptions
from .history import journal_sql
from .models import PartitionDrop
from .partition_layout import (
    JOURNAL_TABLE,
    Layout,
    Partition,
    check_partman,
    describe_partitions,
    ensure_journal,
    journal_rows,
    manifest_entries,
    quote_pg,
    recreate_for_restore,
)
from .timefmt import parse_db_timestamp

log = logging.getLogger(__name__)

__all__ = ["JOURNAL_TABLE", "Layout", "Partition", "PartitionDropper", "check_partman", "describe_partitions",
           "manifest_entries", "recreate_for_restore"]

DETACH_RETRIES = 5
LOCK_TIMEOUT = "2s"


# ---------------------------------------------------------------------------
# Detach, copy, drop


class PartitionDropper:
    """Moves wholly old partitions of one table into a run's backup, then drops them.

    ``dbapi``: a psycopg2 connection of its own (it switches autocommit for the
    concurrent detach). One instance per run; :meth:`run` returns what it dropped.
    """

    def __init__(self, dbapi: Any, engine: Engine, info: TableInfo, *, run_id: str, select_list: str) -> None:
        self.conn, self.engine, self.info, self.run_id = dbapi, engine, info, run_id
        self.parent = qualified(engine, info.schema, info.name)
        self.journal_table = qualified(engine, info.schema, JOURNAL_TABLE)
        self.journal_sql = journal_sql(engine, info.schema)
        self.select_list = select_list
        self.ts = quote(engine, info.timestamp_column)

    def _sql(self, sql: str, args: Any = None) -> Any:
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else cur.rowcount

    def any_old(self, cutoff: datetime, bound: Any) -> bool:
        """Whether the table holds a row older than the cutoff (``bound``: the cutoff as the column compares)."""
        found = self._sql(f"SELECT EXISTS (SELECT 1 FROM {self.parent} WHERE {self.ts} < %s)", [bound])
        self.conn.rollback()
        return bool(found[0][0])

    def pending(self) -> list[dict[str, Any]]:
        """Journal rows of this table detached (or being detached) by any run and not yet dropped."""
        rows = journal_rows(self.conn, self.engine, self.info.schema, parent=self.info.display_name)
        return [r for r in rows if r["state"] in ("detaching", "detached")]

    def run(self, cutoff: datetime, writer: MemberWriter, journal: Journal) -> list[PartitionDrop]:
        """Finish partitions earlier runs left detached, then detach and drop the wholly old ones."""
        self.conn.autocommit = False
        with self.conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
        self.conn.commit()
        ensure_journal(self.conn, self.engine, self.info.schema)
        dropped = [d for r in self.pending() if (d := self._resume(r, writer, journal))]
        layout = describe_partitions(self.conn, self.info)
        if layout is None or layout.range_on != self.info.timestamp_column:
            return dropped
        for part in layout.wholly_older(self.info, cutoff):
            if self._detach(part, concurrently=not layout.has_default):
                dropped.append(self._archive_and_drop(part.schema, part.name, writer, journal))
        return dropped

    def _resume(self, row: dict[str, Any], writer: MemberWriter, journal: Journal) -> PartitionDrop | None:
        """A partition a dead run journaled: finalize, give back, or archive and drop it."""
        name = f"{quote_pg(row['part_schema'])}.{quote_pg(row['part_name'])}"
        state = self._sql("SELECT i.inhdetachpending FROM pg_inherits i WHERE i.inhrelid = to_regclass(%s)", [name])
        exists = self._sql("SELECT to_regclass(%s) IS NOT NULL", [name])[0][0]
        self.conn.commit()
        if state and state[0][0]:  # a concurrent detach died half-way
            log.warning("finishing the interrupted detach of %s (FINALIZE)", name)
            self._retry(f"ALTER TABLE {self.parent} DETACH PARTITION {name} FINALIZE", autocommit=True)
        elif state or not exists:  # still attached (the detach never committed), or gone
            self._set_state(row, "abandoned")
            return None
        self._take_over(row)
        log.warning("archiving partition %s, detached by run %s that did not finish", name, row["detached_by"])
        return self._archive_and_drop(row["part_schema"], row["part_name"], writer, journal)

    def _take_over(self, row: dict[str, Any]) -> None:
        self._sql(f"UPDATE {self.journal_table} SET run_id = %s, state = 'detached' WHERE run_id = %s "
                  "AND part_schema = %s AND part_name = %s",
                  [self.run_id, row["run_id"], row["part_schema"], row["part_name"]])
        self.conn.commit()

    def _set_state(self, row: dict[str, Any], state: str) -> None:
        self._sql(f"UPDATE {self.journal_table} SET state = %s WHERE run_id = %s AND part_schema = %s "
                  "AND part_name = %s", [state, row["run_id"], row["part_schema"], row["part_name"]])
        self.conn.commit()

    def _retry(self, sql: str, *, autocommit: bool, then: tuple[str, list[Any]] | None = None) -> None:
        """Run ``sql`` under lock_timeout, retried while it waits for a lock; ``then`` in the same transaction."""
        from psycopg2 import errors as pg_errors

        for attempt in range(1, DETACH_RETRIES + 1):
            try:
                self.conn.autocommit = autocommit
                with self.conn.cursor() as cur:
                    cur.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
                    cur.execute(sql)
                    if then:
                        cur.execute(*then)
                    cur.execute("RESET lock_timeout")
                if not autocommit:
                    self.conn.commit()
                return
            except (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected) as exc:
                if not autocommit:
                    self.conn.rollback()
                if attempt == DETACH_RETRIES:
                    raise
                log.warning("%s waited too long for its lock (%s); retry %d", sql.split(" PARTITION ")[0],
                            str(exc).splitlines()[0], attempt)
                time.sleep(0.2 * attempt)
            finally:
                self.conn.autocommit = False

    def _detach(self, part: Partition, *, concurrently: bool) -> bool:
        """Journal, then detach; False (left to the batches) when the server refuses the detach."""
        from psycopg2 import Error as PgError
        from psycopg2 import errors as pg_errors

        row = {"run_id": self.run_id, "part_schema": part.schema, "part_name": part.name}
        self._sql(f"INSERT INTO {self.journal_table} (run_id, parent, part_schema, part_name, bound, lower_ts, "
                  "upper_ts, state, detached_by, detached_at) VALUES (%s, %s, %s, %s, %s, %s, %s, 'detaching', "
                  "%s, now())", [self.run_id, self.info.display_name, part.schema, part.name, part.bound, part.lower,
                                 part.upper, self.run_id])
        self.conn.commit()
        name = f"{quote_pg(part.schema)}.{quote_pg(part.name)}"
        if self._pending_detach(name):  # a concurrent detach died half-way (no journal: before ours)
            log.warning("finishing the interrupted detach of %s (FINALIZE)", name)
            concurrently, name = True, f"{name} FINALIZE"
        mark = (f"UPDATE {self.journal_table} SET state = 'detached' WHERE run_id = %s AND part_schema = %s "
                "AND part_name = %s", [self.run_id, part.schema, part.name])
        try:
            if concurrently:
                how = "" if name.endswith(" FINALIZE") else " CONCURRENTLY"
                self._retry(f"ALTER TABLE {self.parent} DETACH PARTITION {name}{how}", autocommit=True)
                self._sql(*mark)
                self.conn.commit()
            else:  # the journal commits with the detach
                self._retry(f"ALTER TABLE {self.parent} DETACH PARTITION {name}", autocommit=False, then=mark)
        except (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected):
            raise
        except PgError as exc:
            self.conn.rollback()
            if self._pending_detach(name.removesuffix(" FINALIZE")):
                raise  # half-detached: the next run FINALIZEs it
            log.warning("partition %s stays attached (%s); its rows go through the batches", part.display_name,
                        str(exc).splitlines()[0])
            self._set_state(row, "abandoned")
            return False
        log.info("detached partition %s (%s)", part.display_name, part.bound)
        return True

    def _pending_detach(self, name: str) -> bool:
        found = self._sql("SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass(%s)", [name])
        self.conn.commit()
        return bool(found and found[0][0])

    def _archive_and_drop(self, schema: str, name: str, writer: MemberWriter, journal: Journal) -> PartitionDrop:
        """One transaction, as a batch: lock and count the detached table, COPY it into one fsynced
        member, DROP it, journal the run and the partition, COMMIT."""
        table = f"{quote_pg(schema)}.{quote_pg(name)}"
        committing = False
        try:
            with self.conn.cursor() as cur:
                cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                cur.execute(f"SELECT count(*), min({self.ts}), max({self.ts}) FROM {table}")
                n, lo, hi = cur.fetchone()
                writer.begin()
                header = writer.size == 0
                if header:
                    writer.write_text(header_line(self.info.column_names))
                cur.copy_expert(f"COPY (SELECT {self.select_list} FROM {table}) TO STDOUT WITH (FORMAT csv)", writer)
                if cur.rowcount != n:
                    raise BatchError(f"copied {cur.rowcount} rows of {schema}.{name} where it counted {n}")
                size = writer.commit_member(n + header)
                done = BatchDone(int(n), journal.last_key, parse_db_timestamp(lo), parse_db_timestamp(hi), size)
                cur.execute(f"DROP TABLE {table}")
                cur.execute(self.journal_sql, journal.params("postgresql", size, done))
                if cur.rowcount != 1:
                    raise BatchError("the run's history row is no longer 'running'; stopped safely")
                cur.execute(f"UPDATE {self.journal_table} SET state = 'dropped', rows = %s, dropped_at = now() "
                            "WHERE run_id = %s AND part_schema = %s AND part_name = %s RETURNING bound, lower_ts, "
                            "upper_ts", [n, self.run_id, schema, name])
                bound, lower, upper = cur.fetchone()
                committing = True
                self.conn.commit()
        except BaseException:
            if not committing:
                self.conn.rollback()
                writer.rollback_member()
            raise
        writer.member_committed()
        journal.add(done)
        log.info("archived and dropped partition %s.%s (%d rows)", schema, name, n)
        return PartitionDrop(f"{schema}.{name}", bound, _utc(lower), _utc(upper), int(n))


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def partition_dropper(run: Any, conn: Any, select_list: str) -> PartitionDropper | None:
    """The partition path for a run (``core.cleanup.Run``) holding ``conn`` (its LockedConnection), or None.

    PostgreSQL only. None where a dropped partition could take a row the batches would
    keep: rows still referenced (RESTRICT / NO ACTION), rows this role cannot see (RLS),
    rows whose delete triggers must fire; also when no second connection is to be had.
    Raises BadSetting for a table whose pg_partman retention would drop partitions unarchived.
    """
    info, deps = run.info, run.dependents
    if info.dialect != "postgresql":
        return None
    if deps.keeping or deps.row_security or deps.delete_hooks:
        log.info("partition path off for %s: referenced rows, row-level security or delete triggers",
                 info.display_name)
        return None
    try:
        with map_exceptions():
            dbapi = conn.another()
    except DatabaseError as exc:
        log.warning("no connection for the partition path (%s); old rows go through the batches", exc.one_line())
        return None
    check_partman(dbapi, info)
    return PartitionDropper(dbapi, run.engine, info, run_id=run.run_id, select_list=select_list)
