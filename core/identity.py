"""Which table this really is, as the server knows it, whatever the settings' spelling.

``127.0.0.1`` and ``localhost``, an omitted port, ``public.conversation_log`` and
``conversation_log``, a relative and an absolute SQLite path, a symlink to the database
file: each spelling must meet the same cleanup lock and the same run records
(docs/design.md, "Locking"). So the lock key and the history key come from the server:

- PostgreSQL: the table's OID resolved by the server (``to_regclass`` applies the
  search path exactly as the cleanup's own statements do) in the current database.
  Advisory locks are scoped to the database already; the database OID and the
  server's system identifier are folded in so the key is unique across clusters too.
- SQLite: the database file's real path (symlinks resolved) and inode, and the
  table's name as ``sqlite_master`` stores it (SQLite names are case-insensitive).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TableIdentity:
    """The server's name for the log table and the keys derived from it."""

    schema: str | None  # PostgreSQL: the schema the server resolved; SQLite: None
    name: str  # as the catalog stores it
    server: str  # PostgreSQL: system identifier + database OID; SQLite: device:inode of the file
    object_id: str  # PostgreSQL: the table's OID; SQLite: the file's real path

    @property
    def key(self) -> str:
        """Canonical ``schema.table`` (PostgreSQL) or table name (SQLite), for run records."""
        return f"{self.schema}.{self.name}" if self.schema else self.name

    @property
    def lock_key(self) -> int:
        """A signed 64-bit key for ``pg_advisory_lock``, the same for every spelling."""
        ident = f"log-retention:{self.server}:{self.object_id}"
        return int.from_bytes(hashlib.sha256(ident.encode()).digest()[:8], "big", signed=True)


def postgres_identity(dbapi: Any, *, schema: str | None, table: str) -> TableIdentity:
    """Resolve ``schema.table`` (or ``table`` through the search path) on the server.

    Reads only. Raises LookupError when the server knows no such table.
    """
    with dbapi.cursor() as cur:
        cur.execute("SELECT quote_ident(%s)", (table,))
        qualified = cur.fetchone()[0]
        if schema:
            cur.execute("SELECT quote_ident(%s)", (schema,))
            qualified = f"{cur.fetchone()[0]}.{qualified}"
        cur.execute(
            "SELECT c.oid, n.nspname, c.relname, d.oid FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_database d ON d.datname = current_database() "
            "WHERE c.oid = to_regclass(%s)",
            (qualified,),
        )
        row = cur.fetchone()
        if row is None:
            dbapi.rollback()
            raise LookupError(f"no table {qualified}")
        oid, nsp, rel, db_oid = row
        cur.execute("SELECT system_identifier FROM pg_control_system()")
        system = cur.fetchone()[0]
    dbapi.rollback()  # a read-only look: leave no transaction open
    return TableIdentity(schema=nsp, name=rel, server=f"{system}:{db_oid}", object_id=str(oid))


def sqlite_identity(dbapi: Any, *, database: str, table: str) -> TableIdentity:
    """Resolve the database file (symlinks, relative paths) and the table's stored name.

    Reads only. Raises LookupError when the file or table does not exist.
    """
    real = Path(os.path.realpath(database))
    try:
        st = real.stat()
    except OSError as exc:
        raise LookupError(f"no database file {real}") from exc
    row = dbapi.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE", (table,)
    ).fetchone()
    if row is None:
        raise LookupError(f"no table {table}")
    return TableIdentity(schema=None, name=row[0], server=f"{st.st_dev}:{st.st_ino}", object_id=str(real))


def sqlite_lock_path(identity: TableIdentity) -> Path:
    """The lock file beside the real database file, one per table (case folded).

    Derived from the resolved path and the stored table name, so a symlink, a
    relative path or another letter case all meet the same file.
    """
    real = Path(identity.object_id)
    return real.with_name(f"{real.name}.{identity.name.lower()}.cleanup-lock")
