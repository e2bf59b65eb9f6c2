"""Backups belong to their source: a restore of another database's or table's backup is refused; restores in History."""

from __future__ import annotations

import json
from pathlib import Path

from core import demo_data, list_history, load_settings, run_cleanup
from core.models import RunStatus
from tests.support.databases import table_snapshot
from tests.test_cli import cli


def _other_sqlite(settings, tmp_path: Path):
    """Another SQLite database with the same table, sharing the same BACKUP_DIR."""
    other = load_settings({"database_url": f"sqlite:///{tmp_path / 'other.db'}", "backup_dir": settings.backup_dir,
                           "batch_size": 100}, environ={}, env_file=None)
    demo_data(other, rows=50, days=10, seed=3)
    return other


def test_restore_of_another_databases_backup_is_refused_with_exit_2_unless_forced(demo_settings, tmp_path):
    r = run_cleanup(demo_settings, retention_days=30, notify=False)
    assert r.status == "success" and r.rows_deleted > 0
    other = _other_sqlite(demo_settings, tmp_path)
    before = table_snapshot(other)
    p = cli(other, "restore", Path(r.backup_file).name)
    assert p.returncode == 2, p.stderr
    line = p.stderr.strip()
    assert "\n" not in line and "is a backup of" in line and "--force-other-source" in line
    assert demo_settings.database_url.split("///")[-1].split("/")[-1].split("?")[0] in line or "postgresql" in line
    assert table_snapshot(other) == before  # nothing inserted
    if not demo_settings.database_url.startswith("sqlite"):
        return  # forcing a PostgreSQL backup into SQLite is the operator's risk; the refusal is what matters
    forced = cli(other, "restore", Path(r.backup_file).name, "--force-other-source", "--json")
    assert forced.returncode == 0, forced.stderr
    out = json.loads(forced.stdout)
    assert out["rows_restored"] > 0 and out["rows_restored"] + out["rows_skipped"] == r.rows_deleted


def test_restore_into_its_own_table_is_recorded_in_history_with_rows_restored_and_skipped(demo_settings):
    r = run_cleanup(demo_settings, retention_days=30, notify=False)
    p = cli(demo_settings, "restore", Path(r.backup_file).name, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["rows_restored"] == r.rows_deleted
    again = cli(demo_settings, "restore", Path(r.backup_file).name, "--json")
    assert json.loads(again.stdout)["rows_skipped"] == r.rows_deleted
    runs = list_history(demo_settings)
    restores = [x for x in runs if x.status == RunStatus.RESTORED]
    assert [(x.rows_matched, x.rows_skipped) for x in restores] == [(0, r.rows_deleted), (r.rows_deleted, 0)]
    assert all(Path(r.backup_file).name in x.notes[0] and "@" in x.notes[0] for x in restores)
    hist = json.loads(cli(demo_settings, "history", "--json").stdout)["runs"]
    assert [h["status"] for h in hist[:3]] == ["restored", "restored", "success"]


def test_backup_size_estimate_is_within_30_percent_once_runs_have_written_backups(settings):
    from core import estimate_backup_bytes, preview

    demo_data(settings, rows=3000, days=90, seed=9)
    first = run_cleanup(settings, retention_days=60, notify=False)
    assert first.rows_archived >= 100
    rows = preview(settings, retention_days=20).rows_to_delete
    estimate = estimate_backup_bytes(settings, rows=rows)
    second = run_cleanup(settings, retention_days=20, notify=False)
    assert second.rows_archived == rows
    assert 0.7 * second.backup_bytes <= estimate <= 1.3 * second.backup_bytes, (estimate, second.backup_bytes)
