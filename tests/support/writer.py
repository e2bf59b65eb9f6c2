"""The concurrent writer of the fault suite, run in its own process by
:func:`tests.support.processes.start_writer`."""

from __future__ import annotations

import json
import os
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, text

from tests.support.databases import TABLE


def writer_main(url: str, log_path: str, stop_path: str, seed: int, id_base: int, max_id: int) -> None:
    """Insert and update rows until ``stop_path`` exists; log every committed change as a JSON line.

    Operations: insert an old row (older than the 30-day cutoff) or a new one; update
    the message of a random row; make a new row old, or an old row new. Every update
    writes a unique message, so a version is recognisable wherever it ends up.
    """
    sqlite = url.startswith("sqlite")
    engine = create_engine(url, connect_args={"timeout": 30} if sqlite else {})
    rnd = random.Random(seed)

    def ts(days_ago: float) -> Any:
        value = datetime.now(UTC) - timedelta(days=days_ago)
        return value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else value

    with open(log_path, "a", encoding="utf-8") as log:
        i = 0
        while not os.path.exists(stop_path):
            i += 1
            op = rnd.random()
            msg = f"writer version {seed}-{i} \"quoted\", comma\nnewline"
            with engine.begin() as conn:
                if op < 0.3 or op >= 0.95:
                    key = id_base + i
                    old = op < 0.3
                    conn.execute(text(f"INSERT INTO {TABLE} (id, session_id, role, message, created_at) "
                                      "VALUES (:i, 'writer', 'user', :m, :t)"),
                                 {"i": key, "m": msg, "t": ts(rnd.uniform(31, 89) if old else 0)})
                    entry = {"op": "insert", "id": key, "msg": msg, "old": old}
                else:
                    key = rnd.randint(1, max_id)
                    if op < 0.7:
                        sql, kind, old = f"UPDATE {TABLE} SET message = :m WHERE id = :i", "update", None
                        params = {"m": msg, "i": key}
                    else:
                        old = op < 0.85
                        sql = f"UPDATE {TABLE} SET message = :m, created_at = :t WHERE id = :i"
                        kind = "make old" if old else "make new"
                        params = {"m": msg, "i": key, "t": ts(rnd.uniform(31, 89) if old else 0)}
                    if conn.execute(text(sql), params).rowcount != 1:
                        continue  # the row is gone (archived): nothing changed
                    entry = {"op": kind, "id": key, "msg": msg, "old": old}
            log.write(json.dumps(entry) + "\n")
            log.flush()
            time.sleep(rnd.random() * 0.004)
    engine.dispose()
