"""History's per-day chart counts days of the display zone (DISPLAY_TIMEZONE or the sidebar's choice), not UTC days."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from core import i18n
from core.config import Settings
from core.db import get_engine
from core.history import insert_run
from core.models import NotifyStatus, RunResult, RunStatus, Trigger
from core.present import runs_per_day
from tests.test_dashboard import signed_in
from tests.test_dashboard_ko import app_env  # noqa: F401 (the fixture)

EVENING_UTC = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)  # 2026-01-06 05:00 in Seoul


def _run(started: datetime, rows: int, seconds: float) -> RunResult:
    return RunResult(run_id=str(uuid.uuid4()), status="success", table="conversation_log", cutoff=started,
                     rows_archived=rows, rows_deleted=rows, backup_file=None, manifest_file=None, sha256=None,
                     notification="skipped", duration_s=seconds, started_at=started,
                     finished_at=started + timedelta(seconds=seconds), trigger="cli")


def test_a_run_on_a_utc_evening_lands_on_the_next_day_in_seoul():
    runs = [_run(EVENING_UTC, 100, 2.0), _run(datetime(2026, 1, 6, 1, 0, tzinfo=UTC), 50, 1.0),
            _run(datetime(2026, 1, 5, 10, 0, tzinfo=UTC), 7, 0.5)]
    with i18n.use(zone="Asia/Seoul"):
        seoul = runs_per_day(runs)
    assert [(d.day.isoformat(), d.runs, d.rows_deleted, d.seconds) for d in seoul] == [
        ("2026-01-05", 1, 7, 0.5), ("2026-01-06", 2, 150, 3.0)]
    with i18n.use(zone="UTC"):
        utc = runs_per_day(runs)
    assert [(d.day.isoformat(), d.rows_deleted) for d in utc] == [("2026-01-05", 107), ("2026-01-06", 50)]


def _chart_days(at) -> set[str]:
    """The day labels of History's charts (the data Streamlit sends to the browser)."""
    import pyarrow as pa

    days = set()
    charts = at.get("vega_lite_chart")
    assert len(charts) == 2  # rows deleted and duration, per day
    for chart in charts:
        for ds in chart.proto.datasets:
            days.update(pa.ipc.open_stream(ds.data.data).read_all().to_pandas()["day"])
        spec = json.loads(chart.proto.spec)
        days.update(v["day"] for data in spec.get("datasets", {}).values() for v in data)
    return days


def test_history_chart_days_are_days_of_the_display_zone(demo_settings: Settings, app_env):  # noqa: F811
    insert_run(get_engine(demo_settings), demo_settings.table_parts[0], run_id=str(uuid.uuid4()),
               table_name=demo_settings.table, trigger=Trigger.CLI, status=RunStatus.SUCCESS,
               started_at=EVENING_UTC, finished_at=EVENING_UTC + timedelta(seconds=3), cutoff=EVENING_UTC,
               rows_archived=42, rows_deleted=42, rows_matched=42, rows_skipped=0, backup_file=None,
               notification=NotifyStatus.SKIPPED)
    app_env(demo_settings, DISPLAY_TIMEZONE="Asia/Seoul")
    at = signed_in()
    at.switch_page("pages/history.py").run()
    assert not at.exception
    assert _chart_days(at) == {"2026-01-06"}
    app_env(demo_settings, DISPLAY_TIMEZONE="UTC")
    at = signed_in()
    at.switch_page("pages/history.py").run()
    assert _chart_days(at) == {"2026-01-05"}
