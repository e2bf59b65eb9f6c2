"""One batch = one transaction: copy a key range into the backup, read it back, delete it, commit.

The rows written and the rows deleted are the same rows by construction: the
batch's key range and the cutoff predicate are evaluated in one snapshot
(PostgreSQL REPEATABLE READ; SQLite BEGIN IMMEDIATE, which excludes writers), and
the counts of the aggregate, the copy and the DELETE must agree or the batch is
rolled back. A row inserted or updated after the snapshot is invisible to both the
copy and the DELETE, so it stays in the table. The batch's gzip member is read back
and fsynced, and the run's journal row updated, before the COMMIT (docs/design.md).
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from .backup.csvfile import header_line, make_rows_encoder
from .backup.writer import MemberWriter
from .batch_journal import BatchDone, Journal
from .db import TableInfo, qualified, quote
from .errors import BatchConflict, BatchError
from .history import journal_sql
from .shape import (
    cutoff_value,
    key_compare,
    key_of,
    next_batch_sql,
    order_by,
    ts_to_utc,
    walk_columns,
)
from .timefmt import SqliteTsFormat

log = logging.getLogger(__name__)

__all__ = ["BatchDone", "Batcher", "Journal", "PostgresBatcher", "SqliteBatcher"]

RETRIES = 5


class Batcher:
    """Dialect-specific batch work; subclasses implement ``_batch``."""

    placeholder = "?"  # the DB-API driver's parameter marker
    cutoff_param: Any

    def __init__(self, conn: Any, info: TableInfo, *, cutoff: datetime, batch_size: int, engine: Engine,
                 skip: str = "") -> None:
        self.conn, self.info, self.cutoff, self.batch_size = conn, info, cutoff, batch_size
        # NOT EXISTS terms (dependents.skip_referenced_sql): rows still referenced through
        # RESTRICT / NO ACTION are neither counted, copied nor deleted; they stay.
        self.skip = skip
        self.skipped = 0  # old rows kept for that reason when the run counted
        self.q = lambda name: quote(engine, name)
        self.table = qualified(engine, info.schema, info.name)
        self.walk = walk_columns(info, self.q)  # the key (or SQLite rowid) batches are cut by
        self.order = order_by(self.walk)
        self.ts = self.q(info.timestamp_column)
        self.journal_sql = journal_sql(engine, info.schema)
        # The largest old key when the run counted: rows that arrive later, even with
        # old timestamps, wait for the next run instead of keeping this one going.
        self.upper: Any = None
        # SQLite: stop reading a batch's rows after this many seconds of holding the write lock, and
        # archive and delete the rows read so far (core.pacing, CLEANUP_BATCH_TARGET_MS). None: never.
        self.cut_after_s: float | None = None

    def run_batch(self, writer: MemberWriter, after: Any, journal: Journal) -> BatchDone | None:
        """Archive and delete the next key range after ``after``; None when nothing is left.

        Retries a batch that met a concurrent update. Raises BatchError (BatchConflict after
        the last retry), BackupWriteError, or the driver's error otherwise;
        the file is cut back unless the COMMIT itself failed (its outcome is then
        unknown, and recovery reads the journal to decide).
        """
        last = ""
        for attempt in range(1, RETRIES + 1):
            try:
                done = self._batch(writer, after, journal)
            except BatchConflict as exc:  # a concurrent change, a deadlock, or lock_timeout
                log.warning("batch after key %s met a concurrent change (%s); retry %d", after, exc, attempt)
                last = str(exc)
                time.sleep(0.05 * attempt)
                continue
            writer.member_committed()  # committed (or nothing begun): the next batch's failure must not cut it
            return done
        raise BatchConflict(f"a batch met concurrent changes or locks {RETRIES} times in a row ({last}); "
                            "stopped safely")

    def _where(self, after: Any, hi: Any | None) -> tuple[str, list[Any]]:
        """The batch predicate: older than the cutoff, keys in (after, hi or the run's upper key]."""
        ph = self.placeholder
        cond, args = [f"{self.ts} < {ph}"], [self.cutoff_param]
        if after is not None:
            sql, values = key_compare(self.walk, ">", after, ph)
            cond.append(sql)
            args.extend(values)
        bound = hi if hi is not None else self.upper
        if bound is not None:
            sql, values = key_compare(self.walk, "<=", bound, ph)
            cond.append(sql)
            args.extend(values)
        if self.skip:
            cond.append(self.skip)
        return " AND ".join(cond), args

    def _skipped_sql(self) -> tuple[str, list[Any]]:
        """Count of old rows the skip terms keep (the same cutoff parameter as the batches)."""
        return (f"SELECT count(*) FROM {self.table} WHERE {self.ts} < {self.placeholder} AND NOT ({self.skip})",
                [self.cutoff_param])

    def _next(self, where: str) -> str:
        """The query of the next batch's last key, count and time span (``limit`` as a parameter)."""
        return next_batch_sql(self.info, self.q, self.table, where).format(limit=self.placeholder)

    def _upper_sql(self, where: str) -> str:
        return f"SELECT {', '.join(self.walk)} FROM {self.table} WHERE {where} ORDER BY {order_by(self.walk, True)} LIMIT 1"

    def _done(self, row: Any, size: int) -> BatchDone:
        w = len(self.walk)
        return BatchDone(int(row[w]), key_of(row, w), ts_to_utc(self.info, row[w + 1]),
                         ts_to_utc(self.info, row[w + 2]), size)

    def _batch(self, writer: MemberWriter, after: Any, journal: Journal) -> BatchDone | None:
        raise NotImplementedError


class PostgresBatcher(Batcher):
    """COPY a key range TO STDOUT into one gzip member while the same transaction DELETEs it.

    The batch's transaction (``conn``, REPEATABLE READ) counts the range, exports its
    snapshot, and DELETEs the range in a worker thread while ``reader`` COPYs the same
    range in that same snapshot: the server deletes and copies on two cores. Without a
    ``reader`` (no second connection to be had), ``conn`` copies, then deletes. The
    DELETE commits only after the member is written, read back and fsynced. The rows
    copied are the rows deleted: one snapshot, one predicate, three counts that must
    agree; a row changed after the snapshot makes the DELETE fail, and the batch is retried.
    """

    placeholder = "%s"

    def __init__(self, *args: Any, reader: Any | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from psycopg2 import errors as pg_errors  # imported here: SQLite installs need no psycopg2 import

        # A child row inserted after the snapshot makes the DELETE fail its foreign key: a
        # concurrent change like any other; the retried batch's NOT EXISTS skips that row.
        self._retryable = (pg_errors.SerializationFailure, pg_errors.LockNotAvailable, pg_errors.DeadlockDetected,
                           pg_errors.ForeignKeyViolation)
        self.reader = reader
        self._conns = (self.conn,) if reader is None else (self.conn, reader)
        self.conn.set_session(isolation_level="REPEATABLE READ", autocommit=False)
        if reader is not None:
            reader.set_session(isolation_level="REPEATABLE READ", readonly=True, autocommit=False)
        for c in self._conns:
            with c.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")  # the COPY prints timestamps in the session's zone
                cur.execute("SET lock_timeout = '30s'")
            c.commit()
        # Zone-less timestamps and dates are written as stored (the manifest names their zone).
        self.select_list = ", ".join(self.q(c) for c in self.info.column_names)
        self.cutoff_param: Any = cutoff_value(self.info, self.cutoff)

    def count(self) -> int:
        where, args = self._where(None, None)
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {self.table} WHERE {where}", args)
            n = cur.fetchone()[0]
            cur.execute(self._upper_sql(where), args)
            top = cur.fetchone()
            self.upper = None if top is None else key_of(top, len(self.walk))
            if self.skip:
                cur.execute(*self._skipped_sql())
                self.skipped = int(cur.fetchone()[0])
        self.conn.rollback()
        return int(n)

    def _delete(self, where: str, args: list[Any]) -> int:
        with self.conn.cursor() as cur:
            cur.execute(f"DELETE FROM {self.table} WHERE {where}", args)
            return int(cur.rowcount)

    def _batch(self, writer: MemberWriter, after: Any, journal: Journal) -> BatchDone | None:
        conn = self.conn
        committing = False
        deleting: Future[int] | None = None
        try:
            with conn.cursor() as cur:
                t0 = time.perf_counter()
                where, args = self._where(after, None)
                # One pass over the next batch_size old rows: the batch's last key, and the
                # count and time span of exactly the rows in (after, hi].
                cur.execute(f"SELECT n.*, pg_export_snapshot() FROM ({self._next(where)}) AS n",
                            [*args, self.batch_size])
                row = cur.fetchone()
                if row is None:
                    conn.rollback()
                    return None
                snapshot = row[-1]
                pending = self._done(row, 0)
                n, hi = pending.rows, pending.last_key
                where, args = self._where(after, hi)
                t1 = time.perf_counter()
                writer.begin()
                header = writer.size == 0
                if header:
                    writer.write_text(header_line(self.info.column_names))
                copy_sql = cur.mogrify(
                    f"COPY (SELECT {self.select_list} FROM {self.table} WHERE {where} "
                    f"ORDER BY {self.order}) TO STDOUT WITH (FORMAT csv)",
                    args,
                ).decode()
                if self.reader is None:  # one connection: copy, then delete
                    cur.copy_expert(copy_sql, writer)
                    copied = cur.rowcount
                    deleted = self._delete(where, args)
                else:
                    with self.reader.cursor() as rcur:
                        rcur.execute("SET TRANSACTION SNAPSHOT %s", [snapshot])  # sees what the DELETE sees
                        pool = ThreadPoolExecutor(1, thread_name_prefix="batch-delete")
                        deleting = pool.submit(self._delete, where, args)
                        pool.shutdown(wait=False)  # its thread ends with the DELETE
                        rcur.copy_expert(copy_sql, writer)
                        copied = rcur.rowcount
                    self.reader.rollback()  # read only: ends the snapshot
                t2 = time.perf_counter()
                if copied != n:
                    raise BatchError(f"copied {copied} rows where the snapshot counted {n}; stopped safely")
                if deleting is not None:
                    deleted = deleting.result()
                if deleted != n:
                    raise BatchError(f"DELETE matched {deleted} rows, backup holds {n}; rolled back")
                t3 = time.perf_counter()
                size = writer.commit_member(n + header)  # written, read back, durable: now the DELETE may commit
                t4 = time.perf_counter()
                done = dataclasses.replace(pending, committed_bytes=size)
                cur.execute(self.journal_sql, journal.params("postgresql", size, done))
                if cur.rowcount != 1:
                    raise BatchError("the run's history row is no longer 'running'; stopped safely")
                committing = True
                conn.commit()
                done = dataclasses.replace(done, held_s=time.perf_counter() - t0)
                log.debug("batch of %d rows held its locks %.0f ms: select %.0f, copy %.0f, rest of delete %.0f, "
                          "backup sync %.0f, journal and commit %.0f ms", n, 1000 * done.held_s, *(1000 * (b - a) for
                          a, b in ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t0 + done.held_s))))
                return done
        except self._retryable as exc:
            self._undo(writer, committing, deleting)
            raise BatchConflict(str(exc).splitlines()[0]) from None
        except BaseException:
            self._undo(writer, committing, deleting)
            raise

    def _undo(self, writer: MemberWriter, committing: bool, deleting: Future[int] | None) -> None:
        if committing:
            return  # outcome unknown: keep the bytes; recovery decides from the journal
        if deleting is not None:
            deleting.exception()  # the connection is busy until the DELETE ends
        for c in self._conns:
            try:
                c.rollback()
            except Exception:  # the connection may be gone; the server rolls back itself
                log.debug("rollback failed", exc_info=True)
        writer.rollback_member()


class SqliteBatcher(Batcher):
    """BEGIN IMMEDIATE; read the key range through a cursor into one gzip member; DELETE it."""

    placeholder = "?"

    def __init__(self, *args: Any, fmt: SqliteTsFormat, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fmt = fmt
        self.cutoff_param = cutoff_value(self.info, self.cutoff, fmt)
        # Every value as stored, its storage class readable from the CSV (backup.csvfile.sqlite_value).
        self.encode_rows = make_rows_encoder([None] * len(self.info.columns))
        self.select_list = ", ".join(self.q(c) for c in self.info.column_names)

    def count(self) -> int:
        where, args = self._where(None, None)
        n = _one(self.conn, f"SELECT count(*) FROM {self.table} WHERE {where}", args)[0]
        top = _one(self.conn, self._upper_sql(where), args)
        self.upper = None if top is None else key_of(top, len(self.walk))
        if self.skip:
            self.skipped = int(_one(self.conn, *self._skipped_sql())[0])
        return int(n)

    def _batch(self, writer: MemberWriter, after: Any, journal: Journal) -> BatchDone | None:
        conn = self.conn
        committing = False
        try:
            conn.execute("BEGIN IMMEDIATE")  # takes the write lock: the snapshot cannot change under us
        except sqlite3.OperationalError as exc:
            raise _conflict(exc) from None
        t0 = time.perf_counter()
        try:
            where, args = self._where(after, None)
            # One pass, as on PostgreSQL: last key, count and time span of the next batch.
            # (ORDER BY pk lets SQLite walk the primary key; "+pk" would add a sort.)
            row = _one(conn, self._next(where), [*args, self.batch_size])
            if row is None:
                conn.execute("ROLLBACK")
                return None
            pending = self._done(row, 0)
            t1 = time.perf_counter()
            writer.begin()
            header = writer.size == 0
            if header:
                writer.write_text(header_line(self.info.column_names))
            copied, cut = self._copy(writer, *self._where(after, pending.last_key), t0)
            if cut and copied < pending.rows:  # out of time: the batch is the first `copied` rows, in key order
                row = _one(conn, self._next(where), [*args, copied])
                pending = dataclasses.replace(self._done(row, 0), cut=True)
            n = pending.rows
            if copied != n:
                raise BatchError(f"read {copied} rows where the snapshot counted {n}; stopped safely")
            where, args = self._where(after, pending.last_key)
            t2 = time.perf_counter()
            # as on PostgreSQL: DELETE while the last pieces are compressed, commit after fsync
            deleted = conn.execute(f"DELETE FROM {self.table} WHERE {where}", args).rowcount
            if deleted != n:
                raise BatchError(f"DELETE matched {deleted} rows, backup holds {n}; rolled back")
            t3 = time.perf_counter()
            size = writer.commit_member(n + header)
            t4 = time.perf_counter()
            done = dataclasses.replace(pending, committed_bytes=size)
            if conn.execute(self.journal_sql, journal.params("sqlite", size, done)).rowcount != 1:
                raise BatchError("the run's history row is no longer 'running'; stopped safely")
            committing = True
            conn.execute("COMMIT")
            t5 = time.perf_counter()
            log.debug("batch of %d rows%s held the write lock %.0f ms: select %.0f, read %.0f, delete %.0f, "
                      "backup sync %.0f, journal and commit %.0f ms", n, " (cut short)" if done.cut else "",
                      1000 * (t5 - t0), *(1000 * (b - a) for a, b in ((t0, t1), (t1, t2), (t2, t3), (t3, t4),
                                                                       (t4, t5))))
            return dataclasses.replace(done, held_s=t5 - t0)
        except BaseException as exc:
            # SQLITE_BUSY at COMMIT (a reader kept the lock COMMIT needs past the busy timeout) leaves
            # the transaction open and uncommitted; any other COMMIT failure has an unknown outcome
            # (recovery decides from the journal), so its bytes are kept.
            conflict = _conflict(exc)
            if not committing or conflict is not exc:
                self._undo(writer)
            if conflict is not exc:
                raise conflict from None
            raise

    def _copy(self, writer: MemberWriter, where: str, args: list[Any], t0: float) -> tuple[int, bool]:
        """Encode the range's rows into the member, in key order; stop early once ``cut_after_s``
        has passed since ``t0`` (the lock was taken). Returns (rows written, whether it stopped early)."""
        deadline = None if self.cut_after_s is None else t0 + self.cut_after_s
        cur = self.conn.execute(f"SELECT {self.select_list} FROM {self.table} WHERE {where} ORDER BY {self.order}",
                                args)
        copied = 0
        encode_rows, write = self.encode_rows, writer.write_text
        try:
            while rows := cur.fetchmany(250):
                write(encode_rows(rows))
                copied += len(rows)
                if deadline is not None and time.perf_counter() >= deadline:
                    return copied, True
        finally:
            # A statement left mid-way (cut short, a value that is not UTF-8, a failed write) keeps a
            # read lock after ROLLBACK: nobody, not even the failure's history update, could write.
            cur.close()
        return copied, False

    def _undo(self, writer: MemberWriter) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except Exception:
            log.debug("rollback failed", exc_info=True)
        writer.rollback_member()


def _conflict(exc: BaseException) -> BaseException:
    """SQLITE_BUSY / SQLITE_LOCKED (the busy timeout ran out: another session kept the database
    locked) as a BatchConflict, which the batch retries; any other error as it is."""
    if isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) in (
            sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return BatchConflict(f"the database stayed locked by another session ({exc})")
    return exc


def _one(conn: Any, sql: str, args: list[Any]) -> Any:
    """First row of a query, with the statement closed: an open SQLite statement
    keeps a read lock that would block the service's writers between batches."""
    cur = conn.execute(sql, args)
    try:
        return cur.fetchone()
    finally:
        cur.close()
