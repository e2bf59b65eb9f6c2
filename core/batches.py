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

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from .backup.csvfile import header_line, make_rows_encoder
from .backup.writer import MemberWriter
from .db import TableInfo, qualified, quote
from .errors import BatchConflict, BatchError
from .history import db_time, journal_sql
from .timefmt import SqliteTsFormat, as_utc, parse_db_timestamp, sqlite_cutoff, sqlite_to_csv

log = logging.getLogger(__name__)

RETRIES = 5


@dataclass(frozen=True)
class BatchDone:
    rows: int
    last_key: Any
    min_ts: datetime | None
    max_ts: datetime | None
    committed_bytes: int


@dataclass
class Journal:
    """What the history row records after each committed batch."""

    run_id: str
    rows: int = 0
    batches: int = 0
    min_ts: datetime | None = None
    max_ts: datetime | None = None
    last_key: Any = None

    def add(self, b: BatchDone) -> None:
        self.rows += b.rows
        self.batches += 1
        self.last_key = b.last_key
        if b.min_ts is not None:
            self.min_ts = b.min_ts if self.min_ts is None else min(self.min_ts, b.min_ts)
        if b.max_ts is not None:
            self.max_ts = b.max_ts if self.max_ts is None else max(self.max_ts, b.max_ts)

    def params(self, dialect: str, committed_bytes: int, batch: BatchDone) -> dict[str, Any]:
        lo = batch.min_ts if self.min_ts is None else min(x for x in (self.min_ts, batch.min_ts) if x)
        hi = batch.max_ts if self.max_ts is None else max(x for x in (self.max_ts, batch.max_ts) if x)
        return {
            "committed_bytes": committed_bytes,
            "rows": self.rows + batch.rows,
            "batches": self.batches + 1,
            "last_key": str(batch.last_key),
            "min_ts": db_time(dialect, lo),
            "max_ts": db_time(dialect, hi),
            "run_id": self.run_id,
        }


class Batcher:
    """Dialect-specific batch work; subclasses implement ``_batch``."""

    placeholder = "?"  # the DB-API driver's parameter marker
    cutoff_param: Any

    def __init__(self, conn: Any, info: TableInfo, *, cutoff: datetime, batch_size: int, engine: Engine) -> None:
        self.conn, self.info, self.cutoff, self.batch_size = conn, info, cutoff, batch_size
        self.q = lambda name: quote(engine, name)
        self.table = qualified(engine, info.schema, info.name)
        self.pk = self.q(info.primary_key)
        self.ts = self.q(info.timestamp_column)
        self.journal_sql = journal_sql(engine, info.schema)
        # The largest old key when the run counted: rows that arrive later, even with
        # old timestamps, wait for the next run instead of keeping this one going.
        self.upper: Any = None

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
            cond.append(f"{self.pk} > {ph}")
            args.append(after)
        bound = hi if hi is not None else self.upper
        if bound is not None:
            cond.append(f"{self.pk} <= {ph}")
            args.append(bound)
        return " AND ".join(cond), args

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

        self._retryable = (pg_errors.SerializationFailure, pg_errors.LockNotAvailable, pg_errors.DeadlockDetected)
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
        cols = []
        for c in self.info.columns:
            qc = self.q(c.name)
            # Naive timestamps mean UTC: print them with +00 so the backup is explicit.
            cols.append(f"({qc} AT TIME ZONE 'UTC') AS {qc}" if c.naive_timestamp else qc)
        self.select_list = ", ".join(cols)
        ts_col = next(c for c in self.info.columns if c.name == self.info.timestamp_column)
        self.cutoff_param: Any = (
            as_utc(self.cutoff).replace(tzinfo=None) if ts_col.naive_timestamp else as_utc(self.cutoff)
        )

    def count(self) -> int:
        where, args = self._where(None, None)
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT count(*), max({self.pk}) FROM {self.table} WHERE {where}", args)
            n, self.upper = cur.fetchone()
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
                cur.execute(
                    f"SELECT max(k), count(*), min(t), max(t), pg_export_snapshot() FROM (SELECT {self.pk} AS k, "
                    f"{self.ts} AS t FROM {self.table} WHERE {where} ORDER BY {self.pk} LIMIT %s) AS b",
                    [*args, self.batch_size],
                )
                hi, n, lo_ts, hi_ts, snapshot = cur.fetchone()
                if hi is None:
                    conn.rollback()
                    return None
                where, args = self._where(after, hi)
                t1 = time.perf_counter()
                writer.begin()
                header = writer.size == 0
                if header:
                    writer.write_text(header_line(self.info.column_names))
                copy_sql = cur.mogrify(
                    f"COPY (SELECT {self.select_list} FROM {self.table} WHERE {where} "
                    f"ORDER BY {self.pk}) TO STDOUT WITH (FORMAT csv)",
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
                done = BatchDone(n, hi, parse_db_timestamp(lo_ts), parse_db_timestamp(hi_ts), size)
                cur.execute(self.journal_sql, journal.params("postgresql", size, done))
                if cur.rowcount != 1:
                    raise BatchError("the run's history row is no longer 'running'; stopped safely")
                committing = True
                conn.commit()
                log.debug("batch of %d rows: select %.0f ms, copy %.0f ms, rest of delete %.0f ms, backup sync "
                          "%.0f ms, journal and commit %.0f ms", n, *(1000 * (b - a) for a, b in
                          ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, time.perf_counter()))))
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
        self.cutoff_param = sqlite_cutoff(fmt, self.cutoff)
        ts_i = self.info.column_index(self.info.timestamp_column)
        converters: list[Any] = [None] * len(self.info.columns)
        converters[ts_i] = lambda v: sqlite_to_csv(fmt, v) if isinstance(v, str) else v
        self.encode_rows = make_rows_encoder(converters)
        self.select_list = ", ".join(self.q(c) for c in self.info.column_names)

    def count(self) -> int:
        where, args = self._where(None, None)
        n, self.upper = _one(self.conn, f"SELECT count(*), max({self.pk}) FROM {self.table} WHERE {where}", args)
        return int(n)

    def _batch(self, writer: MemberWriter, after: Any, journal: Journal) -> BatchDone | None:
        conn = self.conn
        committing = False
        conn.execute("BEGIN IMMEDIATE")  # takes the write lock: the snapshot cannot change under us
        try:
            where, args = self._where(after, None)
            # One pass, as on PostgreSQL: last key, count and time span of the next batch.
            # (ORDER BY pk lets SQLite walk the primary key; "+pk" would add a sort.)
            hi, n, lo_ts, hi_ts = _one(
                conn,
                f"SELECT max(k), count(*), min(t), max(t) FROM (SELECT {self.pk} AS k, {self.ts} AS t "
                f"FROM {self.table} WHERE {where} ORDER BY {self.pk} LIMIT ?)",
                [*args, self.batch_size],
            )
            if hi is None:
                conn.execute("ROLLBACK")
                return None
            where, args = self._where(after, hi)
            writer.begin()
            header = writer.size == 0
            if header:
                writer.write_text(header_line(self.info.column_names))
            cur = conn.execute(f"SELECT {self.select_list} FROM {self.table} WHERE {where} ORDER BY {self.pk}", args)
            copied = 0
            encode_rows, write = self.encode_rows, writer.write_text
            try:
                while rows := cur.fetchmany(500):
                    write(encode_rows(rows))
                    copied += len(rows)
            finally:
                # A statement left mid-way (a value that is not UTF-8, a failed write) keeps a read
                # lock after ROLLBACK: nobody, not even the failure's history update, could write.
                cur.close()
            if copied != n:
                raise BatchError(f"read {copied} rows where the snapshot counted {n}; stopped safely")
            # as on PostgreSQL: DELETE while the last pieces are compressed, commit after fsync
            deleted = conn.execute(f"DELETE FROM {self.table} WHERE {where}", args).rowcount
            if deleted != n:
                raise BatchError(f"DELETE matched {deleted} rows, backup holds {n}; rolled back")
            size = writer.commit_member(n + header)
            done = BatchDone(n, hi, parse_db_timestamp(lo_ts), parse_db_timestamp(hi_ts), size)
            if conn.execute(self.journal_sql, journal.params("sqlite", size, done)).rowcount != 1:
                raise BatchError("the run's history row is no longer 'running'; stopped safely")
            committing = True
            conn.execute("COMMIT")
            return done
        except BaseException:
            if not committing:
                try:
                    conn.execute("ROLLBACK")
                except Exception:
                    log.debug("rollback failed", exc_info=True)
                writer.rollback_member()
            raise


def _one(conn: Any, sql: str, args: list[Any]) -> Any:
    """First row of a query, with the statement closed: an open SQLite statement
    keeps a read lock that would block the service's writers between batches."""
    cur = conn.execute(sql, args)
    try:
        return cur.fetchone()
    finally:
        cur.close()
