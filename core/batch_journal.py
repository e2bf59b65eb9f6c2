"""What one committed batch did, and the run's journal of them (recorded with each batch's DELETE).

:class:`BatchDone` is a batch's outcome (rows, last key, time span, the backup's length and
how long it held its locks); :class:`Journal` adds them up and gives the parameters of the
history row's UPDATE that commits in the same transaction as the batch's DELETE.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .history import db_time
from .shape import key_text


@dataclass(frozen=True)
class BatchDone:
    rows: int
    last_key: Any
    min_ts: datetime | None
    max_ts: datetime | None
    committed_bytes: int
    held_s: float = 0.0  # how long the batch's transaction held its locks (BEGIN to COMMIT done)
    cut: bool = False  # it stopped reading at Batcher.cut_after_s: fewer rows than asked, not the end


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
            "last_key": key_text(batch.last_key),
            "min_ts": db_time(dialect, lo),
            "max_ts": db_time(dialect, hi),
            "run_id": self.run_id,
        }
