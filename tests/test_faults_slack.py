"""Fault scenario: Slack down, slow or rate-limiting throughout (the fake Slack of
tests/fakeslack.py). A cleanup never fails or stalls because of its report.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from core import list_history, run_cleanup
from core.demo import demo_data
from tests.fakeslack import TOKEN, FakeSlack, Reply, closed_port
from tests.support.databases import make_settings, table_snapshot
from tests.support.invariants import check_no_loss

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("no_proxy")]


SLACK_METHODS = ("conversations.list", "chat.postMessage", "files.getUploadURLExternal",
                 "files.completeUploadExternal", "upload", "webhook")


@pytest.fixture
def sqlite_demo(tmp_path: Path):
    s = make_settings(f"sqlite:///{tmp_path / 'slack.db'}", tmp_path / "backups")
    demo_data(s, rows=600, days=90, seed=9)
    return s


@pytest.mark.parametrize("outage", ["500", "hang", "429 forever", "refused", "webhook 500", "webhook hang",
                                    "429 twice, then fine"])
def test_slack_outage_never_fails_or_stalls_a_cleanup(sqlite_demo, outage: str, scenario_stats):
    timeout = 5.0 if outage == "429 twice, then fine" else 1.0
    with FakeSlack() as slack:
        base = slack.api_url if outage != "refused" else f"http://127.0.0.1:{closed_port()}/api/"
        if outage.startswith("webhook"):
            s = dataclasses.replace(sqlite_demo, slack_webhook_url=slack.webhook_url, slack_timeout_s=timeout)
        else:
            s = dataclasses.replace(sqlite_demo, slack_bot_token=TOKEN, slack_api_base_url=base,
                                    slack_timeout_s=timeout)
        reply = {"500": Reply(500, body="upstream down"), "webhook 500": Reply(500, body="upstream down"),
                 "hang": Reply(data={"ok": True}, stall=60), "webhook hang": Reply(body="ok", stall=60),
                 "429 forever": Reply(429, data={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "1"}),
                 }.get(outage)
        if reply is not None:
            for method in SLACK_METHODS:
                slack.always(method, reply)
        if outage == "429 twice, then fine":
            limited = Reply(429, data={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "1"})
            slack.script("conversations.list", limited)
            slack.script("chat.postMessage", limited)
        original = set(table_snapshot(s))
        for attempt in range(2):  # a cleanup, then one with nothing to do (also reported)
            t0 = time.monotonic()
            r = run_cleanup(s, notify=True)
            elapsed = time.monotonic() - t0
            assert r.status == ("success" if attempt == 0 else "nothing_to_do"), r.error
            assert elapsed < timeout + 4, f"{outage}: the run took {elapsed:.1f} s with SLACK_TIMEOUT_S={timeout}"
            row = next(h for h in list_history(s) if h.run_id == r.run_id)
            if outage == "429 twice, then fine":
                assert r.notification == row.notification == "sent", r.notification_detail
                break
            assert r.notification == row.notification == "failed", (r.notification, r.notification_detail)
            assert row.notification_detail and TOKEN not in row.notification_detail
            assert row.status == r.status
    counts = check_no_loss(s, original)
    assert counts["in_backups"] > 0
    st = scenario_stats.get("Slack outages (sqlite)")
    st.add(outage, elapsed)
    st.rows_checked += len(original)


def test_slack_down_on_postgresql_too(pg_settings):
    demo_settings = pg_settings
    demo_data(demo_settings, rows=600, days=90, seed=7)
    with FakeSlack() as slack:
        for method in SLACK_METHODS:
            slack.always(method, Reply(503, body="down"))
        s = dataclasses.replace(demo_settings, slack_bot_token=TOKEN, slack_api_base_url=slack.api_url,
                                slack_timeout_s=2.0)
        original = set(table_snapshot(s))
        t0 = time.monotonic()
        r = run_cleanup(s, notify=True)
        assert r.status == "success" and r.notification == "failed", r
        assert time.monotonic() - t0 < 8
    assert list_history(s)[0].notification == "failed"
    check_no_loss(s, original)
