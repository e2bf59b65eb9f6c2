"""core.present: sizes, durations, times, counts and the sentence that says what a run did."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from core.models import NotifyStatus, RunResult, RunStatus, Trigger
from core.present import (
    NO_UNBACKED_DELETE,
    checksum_prefix,
    count,
    describe_run,
    human_bytes,
    human_duration,
    lead_sentence,
    plural,
    timestamp,
)

CUTOFF = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("n, text", [
    (None, "—"),
    (0, "0 B"),
    (17, "17 B"),
    (1023, "1,023 B"),
    (1024, "1.0 KiB"),
    (1536, "1.5 KiB"),
    (5 * 1024**2, "5.0 MiB"),
    (3 * 1024**3 // 2, "1.5 GiB"),
    (2 * 1024**4, "2.0 TiB"),
    (3000 * 1024**4, "3,000.0 TiB"),
])
def test_human_bytes_uses_binary_units(n, text):
    assert human_bytes(n) == text


@pytest.mark.parametrize("seconds, text", [
    (None, "—"),
    (0, "0.0 s"),
    (3.25, "3.2 s"),
    (59.9, "59.9 s"),
    (60, "1 min 00 s"),
    (125, "2 min 05 s"),
    (3599.4, "59 min 59 s"),
    (3600, "1 h 00 min"),
    (7300, "2 h 01 min"),
])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


@pytest.mark.parametrize("n, text", [(0, "0 rows"), (1, "1 row"), (2, "2 rows"), (12345, "12,345 rows")])
def test_plural(n, text):
    assert plural(n, "row") == text


def test_plural_with_an_irregular_plural():
    assert plural(1, "batch", "batches") == "1 batch"
    assert plural(3, "batch", "batches") == "3 batches"


def test_count():
    assert count(None) == "—"
    assert count(0) == "0"
    assert count(1234567) == "1,234,567"


def test_timestamp_is_utc_whatever_the_zone():
    seoul = datetime(2026, 1, 31, 23, 5, 9, tzinfo=timezone(timedelta(hours=9)))
    assert timestamp(seoul) == "2026-01-31 14:05:09 UTC"
    assert timestamp(seoul, seconds=False) == "2026-01-31 14:05 UTC"
    assert timestamp(datetime(2026, 1, 31, 14, 5, 9)) == "2026-01-31 14:05:09 UTC"  # naive is UTC
    assert timestamp(None) == "—"


def test_checksum_prefix():
    assert checksum_prefix("0123456789abcdef" * 4) == "0123456789ab"
    assert checksum_prefix(None) is None
    assert checksum_prefix("") is None


def _run(status: RunStatus, **changes) -> RunResult:
    base = RunResult(
        run_id="r1", status=status, table="conversation_log", cutoff=CUTOFF, rows_archived=0, rows_deleted=0,
        backup_file=None, manifest_file=None, sha256=None, notification=NotifyStatus.SKIPPED, duration_s=2.5,
        trigger=Trigger.CLI, started_at=CUTOFF + timedelta(days=30), finished_at=None,
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("status, changes, sentence", [
    (RunStatus.SUCCESS, {"rows_archived": 1, "rows_deleted": 1},
     "Archived 1 row of conversation_log older than 2026-01-01 00:00:00 UTC to a verified backup and "
     "deleted 1 of them from the table."),
    (RunStatus.SUCCESS, {"rows_archived": 1200, "rows_deleted": 1200},
     "Archived 1,200 rows of conversation_log older than 2026-01-01 00:00:00 UTC to a verified backup and "
     "deleted 1,200 of them from the table."),
    (RunStatus.NOTHING_TO_DO, {},
     "No row of conversation_log is older than 2026-01-01 00:00:00 UTC; nothing was archived or deleted."),
    (RunStatus.DRY_RUN, {"rows_matched": 42},
     "Dry run: 42 rows of conversation_log are older than 2026-01-01 00:00:00 UTC; nothing changed."),
    (RunStatus.FAILED, {"error": "disk full"},
     f"The cleanup of conversation_log failed: disk full. {NO_UNBACKED_DELETE} No row was deleted."),
    (RunStatus.FAILED, {"error": "disk full", "rows_deleted": 300},
     f"The cleanup of conversation_log failed: disk full. {NO_UNBACKED_DELETE} 300 rows were deleted before "
     "it stopped, each in a verified backup."),
    (RunStatus.FAILED, {}, f"The cleanup of conversation_log failed: unknown error. {NO_UNBACKED_DELETE} "
     "No row was deleted."),
    (RunStatus.RUNNING, {}, "A cleanup of conversation_log older than 2026-01-01 00:00:00 UTC is running."),
    (RunStatus.INTERRUPTED, {"error": "the process died"},
     f"{RunStatus.INTERRUPTED.label}: conversation_log: the process died"),
    (RunStatus.INTERRUPTED, {}, f"{RunStatus.INTERRUPTED.label}: conversation_log"),
])
def test_lead_sentence_for_each_status(status, changes, sentence):
    assert lead_sentence(_run(status, **changes)) == sentence


def test_every_status_has_a_lead_sentence_and_a_headline():
    for status in RunStatus:
        text = describe_run(_run(status))
        assert text.headline and text.lead == lead_sentence(_run(status))
        assert dict(text.facts)["Status"] == status.label


def test_lead_sentence_accepts_the_status_as_stored_text():
    assert lead_sentence(_run("nothing_to_do")) == lead_sentence(_run(RunStatus.NOTHING_TO_DO))


def test_describe_run_lists_the_facts_in_display_order():
    text = describe_run(_run(RunStatus.SUCCESS, rows_archived=5, rows_deleted=5))
    assert [label for label, _ in text.facts] == [
        "Table", "Status", "Rows archived", "Rows deleted", "Cutoff", "Duration", "Trigger", "Run"]
    facts = dict(text.facts)
    assert facts["Rows deleted"] == "5" and facts["Duration"] == "2.5 s" and facts["Trigger"] == "cli"
    assert facts["Cutoff"] == "older than 2026-01-01 00:00:00 UTC"
    assert text.headline.startswith("✅")
