"""Fault scenario: a writer in another process inserts and updates rows while cleanups run.

Ends with the invariant checks of ``tests/support/invariants.py``: every original and
inserted row is in the table or in exactly one backup that verifies, never both.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from core import list_backups, run_cleanup
from core.backup.csvfile import iter_records
from core.db import get_engine
from core.demo import demo_data
from tests.support.databases import TABLE, kind_of, table_snapshot
from tests.support.invariants import check_no_loss, check_settled
from tests.support.processes import run_cli, start_writer

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("seed", [7])
def test_writers_in_another_process_lose_nothing(settings, tmp_path: Path, seed: int, scenario_stats):
    """While cleanups run (small batches, in their own process), a writer process inserts rows
    (some old), updates messages, and moves rows across the cutoff both ways. Afterwards every
    row is in the table or in exactly one backup; each updated row is there in its last version;
    no row that a writer had made new was archived in that new version."""
    rows = 4000
    demo_data(settings, rows=rows, days=90, seed=seed)
    original = set(table_snapshot(settings))
    writer, log, stop = start_writer(settings, tmp_path, seed, id_base=1_000_000, max_id=rows)
    t0 = time.monotonic()
    try:
        time.sleep(0.3)
        for batch in ("50", "120"):
            p = run_cli(settings, "run", "--batch-size", batch, "--no-notify", "--json")
            assert p.returncode == 0, p.stderr
            assert json.loads(p.stdout)["status"] in ("success", "nothing_to_do")
    finally:
        stop.touch()
        writer.wait(timeout=60)
    assert writer.returncode == 0
    final = run_cleanup(settings, notify=False)  # what the writer left old
    assert final.status in ("success", "nothing_to_do"), final.error

    entries = [json.loads(line) for line in log.read_text().splitlines()]
    inserted = {str(e["id"]) for e in entries if e["op"] == "insert"}
    last: dict[str, dict] = {}
    for e in entries:
        last[str(e["id"])] = e
    assert len(entries) > 50 and any(e["op"] == "make new" for e in entries), len(entries)
    counts = check_no_loss(settings, original | inserted)
    check_settled(settings, original | inserted, None, restore=False)

    with get_engine(settings).connect() as conn:
        table = {str(k): m for k, m in conn.execute(text(f"SELECT id, message FROM {TABLE}"))}
    archived: dict[str, str | None] = {}
    for b in list_backups(settings):
        it = iter_records(b.file)
        mi = next(it).index("message")
        for rec in it:
            archived[rec[0]] = rec[mi]
    for key, e in last.items():
        if key in archived:
            assert archived[key] == e["msg"], f"row {key} archived in an older version than {e}"
            assert e["old"] is not False, f"row {key} was archived although the writer had made it new: {e}"
        else:
            assert table[key] == e["msg"], f"row {key} is in the table in an older version than {e}"
    s = scenario_stats.get(f"concurrent writer, {kind_of(settings)}")
    s.add(f"seed {seed}", time.monotonic() - t0)
    s.rows_checked += len(original | inserted)
    s.notes.append(f"{len(entries)} committed writes ({len(inserted)} inserts, "
                   f"{sum(e['op'] != 'insert' for e in entries)} updates) during 2 cleanups; "
                   f"{counts['in_backups']} rows archived, 0 lost, every updated row in its last version")
