"""core.notify.message: what a Slack report says, built without any I/O."""

from __future__ import annotations

import ast
import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core import present
from core.models import RunResult
from core.notify import message
from core.notify.message import BackupDelivery, BackupFacts

HOST = "db-host-7"
BACKUP = "/srv/backups/conversation_log-20260131T020000Z-ab12cd.csv.gz"
SHA = "0123456789abcdef" * 4


def run(**changes: Any) -> RunResult:
    result = RunResult(
        run_id="20260131T020000Z-ab12cd",
        status="success",
        table="conversation_log",
        cutoff=datetime(2026, 1, 1, tzinfo=UTC),
        rows_archived=1234,
        rows_deleted=1234,
        backup_file=BACKUP,
        manifest_file=BACKUP.replace(".csv.gz", ".manifest.json"),
        sha256=SHA,
        notification="pending",
        duration_s=125.0,
        trigger="cli",
        started_at=datetime(2026, 1, 31, 2, 0, 0, tzinfo=UTC),
        finished_at=datetime(2026, 1, 31, 2, 2, 5, tzinfo=UTC),
        backup_bytes=71680,
    )
    return dataclasses.replace(result, **changes)


def uploaded(size: int = 71680) -> BackupFacts:
    return BackupFacts(BackupDelivery.UPLOAD, BACKUP, size, 50 * 1024 * 1024)


def texts(blocks: list[dict[str, Any]]) -> list[str]:
    """Every mrkdwn / plain text of the blocks, in order."""
    out = []
    for block in blocks:
        if "text" in block:
            out.append(block["text"]["text"])
        out += [f["text"] for f in block.get("fields", [])]
        out += [e["text"] for e in block.get("elements", [])]
    return out


def by_type(blocks: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [b for b in blocks if b["type"] == kind]


# --- status variants -----------------------------------------------------------


def test_success_report_has_header_lead_facts_backup_and_context() -> None:
    text, blocks = message.run_summary(run(), host=HOST, backup=uploaded())
    assert [b["type"] for b in blocks] == ["header", "section", "section", "section", "context"]
    assert blocks[0]["text"]["text"] == "✅ Log cleanup done: conversation_log"
    assert blocks[1]["text"]["text"] == message.escape(present.lead_sentence(run()))
    fields = [f["text"] for f in blocks[2]["fields"]]
    assert fields[0] == "*Table*\n`conversation_log`"
    assert "*Rows archived*\n1,234" in fields and "*Duration*\n2 min 05 s" in fields
    assert (
        "*Cutoff*\nolder than 2026-01-01 00:00:00 UTC" in fields
        and "*Run*\n`20260131T020000Z-ab12cd`" in fields
    )
    backup = blocks[3]["text"]["text"]
    assert "`conversation_log-20260131T020000Z-ab12cd.csv.gz`" in backup
    assert "70.0 KiB" in backup and f"sha256 `{SHA[:12]}…`" in backup
    assert "attached in this message's thread" in backup
    assert text == (
        "Log cleanup success on conversation_log: "
        + present.lead_sentence(run())
        + f" Backup conversation_log-20260131T020000Z-ab12cd.csv.gz (sha256 {SHA[:12]}…)."
    )


def test_nothing_to_do_report_says_nothing_changed_and_has_no_backup_block() -> None:
    result = run(
        status="nothing_to_do",
        rows_archived=0,
        rows_deleted=0,
        backup_file=None,
        sha256=None,
        backup_bytes=None,
    )
    text, blocks = message.run_summary(result, host=HOST)
    assert blocks[0]["text"]["text"].endswith("nothing to do: conversation_log")
    assert "nothing was archived or deleted" in blocks[1]["text"]["text"]
    assert [b["type"] for b in blocks] == ["header", "section", "section", "context"]
    assert text.startswith("Log cleanup nothing_to_do on conversation_log") and "Backup" not in text


def test_failed_report_with_deleted_rows_says_they_are_all_in_a_verified_backup() -> None:
    result = run(status="failed", rows_deleted=500, error="lost connection to the database")
    text, blocks = message.run_summary(result, host=HOST, backup=uploaded())
    assert "FAILED" in blocks[0]["text"]["text"]
    lead = blocks[1]["text"]["text"]
    assert "```lost connection to the database```" in lead
    assert present.NO_UNBACKED_DELETE in lead
    assert "500 rows were deleted before it stopped, each in a verified backup." in lead
    assert "lost connection to the database" in text and present.NO_UNBACKED_DELETE in text


def test_failed_report_without_deleted_rows_says_no_row_was_deleted() -> None:
    result = run(status="failed", rows_deleted=0, error="disk full", backup_file=None)
    text, blocks = message.run_summary(result, host=HOST)
    lead = blocks[1]["text"]["text"]
    assert "No row was deleted." in lead and "before it stopped" not in lead
    assert "disk full" in text


def test_recovered_runs_are_listed_with_their_status_rows_and_backup() -> None:
    interrupted = run(run_id="20260130T020000Z-dead01", status="interrupted", rows_deleted=77)
    single = run(run_id="20260129T020000Z-beef02", status="interrupted", rows_deleted=1, backup_file=None)
    result = run(status="nothing_to_do", rows_archived=0, rows_deleted=0, backup_file=None, sha256=None)
    text, blocks = message.run_summary(result, host=HOST, recovered=[interrupted, single])
    listed = next(t for t in texts(blocks) if "Interrupted run found and recovered" in t)
    assert "`20260130T020000Z-dead01`" in listed and "77 rows deleted" in listed
    assert "1 row deleted" in listed and "(started 2026-01-31 02:00:00 UTC)" in listed
    assert "backup `conversation_log-20260131T020000Z-ab12cd.csv.gz`" in listed
    assert text.endswith("Recovered 2 interrupted runs.")


def test_recovered_run_ids_alone_are_listed_too() -> None:
    result = run(recovered_runs=("20260130T020000Z-dead01",))
    text, blocks = message.run_summary(result, host=HOST, backup=uploaded())
    assert any("• run `20260130T020000Z-dead01`" in t for t in texts(blocks))
    assert "Recovered 1 interrupted run." in text


def test_more_recovered_runs_than_shown_are_counted() -> None:
    many = [run(run_id=f"run-{i:02d}", status="interrupted") for i in range(message.MAX_RECOVERED_SHOWN + 3)]
    _, blocks = message.run_summary(run(), host=HOST, backup=uploaded(), recovered=many)
    listed = next(t for t in texts(blocks) if "Interrupted run found" in t)
    assert listed.count("• run ") == message.MAX_RECOVERED_SHOWN
    assert "• and 3 more" in listed and "run-12" not in listed


# --- escaping ----------------------------------------------------------------


def test_angle_brackets_and_ampersands_are_escaped_everywhere() -> None:
    result = run(status="failed", table="logs<&>x", error="bad <tag> & more", rows_deleted=0)
    text, blocks = message.run_summary(result, host=HOST)
    for t in texts(blocks)[1:]:  # the header is plain_text: Slack shows it as is
        assert "<" not in t.replace("&lt;", "") and ">" not in t.replace("&gt;", "")
    assert "`logs&lt;&amp;&gt;x`" in blocks[2]["fields"][0]["text"]
    assert "bad &lt;tag&gt; &amp; more" in blocks[1]["text"]["text"]
    assert "bad <tag> & more" in text  # the fallback is plain text, not mrkdwn
    assert blocks[0]["text"]["type"] == "plain_text" and "logs<&>x" in blocks[0]["text"]["text"]


def test_backticks_cannot_break_out_of_code_spans_or_blocks() -> None:
    result = run(status="failed", table="we`ird", error="oops ```rm -rf``` done", rows_deleted=0)
    _, blocks = message.run_summary(result, host="host`name")
    assert blocks[2]["fields"][0]["text"] == "*Table*\n`we'ird`"
    lead = blocks[1]["text"]["text"]
    assert lead.count("```") == 2 and "'''rm -rf'''" in lead
    assert "`host'name`" in blocks[-1]["elements"][0]["text"]


def test_code_span_and_escape() -> None:
    assert message.escape("a<b>&c") == "a&lt;b&gt;&amp;c"
    assert message.code("x`<y>") == "`x'&lt;y&gt;`"


# --- limits --------------------------------------------------------------------


def test_texts_are_cut_to_slack_block_kit_limits() -> None:
    result = run(status="failed", table="t" * 2500, error="e" * 5000, rows_deleted=0)
    text, blocks = message.run_summary(result, host=HOST)
    header = blocks[0]["text"]["text"]
    assert len(header) == message.HEADER_MAX and header.endswith("…")
    assert len(blocks[1]["text"]["text"]) == message.SECTION_MAX
    fields = blocks[2]["fields"]
    assert len(fields) <= message.FIELDS_MAX
    assert len(fields[0]["text"]) == message.FIELD_MAX and fields[0]["text"].endswith("…")
    assert len(text) == message.SECTION_MAX
    assert all(len(t) <= message.SECTION_MAX for t in texts(blocks))


def test_truncate_keeps_short_text_and_marks_a_cut() -> None:
    assert message.truncate("abc", 3) == "abc"
    assert message.truncate("abcd", 3) == "ab…"


# --- facts passed in -----------------------------------------------------------


def test_hostname_passed_in_is_named_in_the_context_block() -> None:
    _, blocks = message.run_summary(run(), host="reports-box-42", backup=uploaded())
    (context,) = by_type(blocks, "context")
    line = context["elements"][0]["text"]
    assert line.startswith("Log Retention Console on `reports-box-42`")
    assert "started 2026-01-31 02:00:00 UTC" in line and "finished 2026-01-31 02:02:05 UTC" in line


@pytest.mark.parametrize(
    ("delivery", "expected"),
    [
        (
            BackupDelivery.TOO_BIG,
            "Backup not attached: 70.0 KiB is over the 1.0 KiB upload limit (SLACK_UPLOAD_MAX_BYTES)",
        ),
        (BackupDelivery.WEBHOOK, "Backup not attached (webhook reports carry no files)"),
        (BackupDelivery.MISSING, "Backup file not found on server `db-host-7`"),
    ],
)
def test_backup_not_attached_says_why_and_where_it_is(delivery: BackupDelivery, expected: str) -> None:
    facts = BackupFacts(delivery, BACKUP, 71680 if delivery is not BackupDelivery.MISSING else None, 1024)
    _, blocks = message.run_summary(run(), host=HOST, backup=facts)
    backup = next(t for t in texts(blocks) if t.startswith("*Backup*"))
    assert expected in backup and f"`{BACKUP}`" in backup


def test_size_passed_in_wins_over_the_run_result() -> None:
    _, blocks = message.run_summary(run(backup_bytes=10), host=HOST, backup=uploaded(size=3 * 1024 * 1024))
    assert any("3.0 MiB" in t for t in texts(blocks))


def test_upload_failed_reply_names_host_and_path() -> None:
    reply = message.upload_failed_reply("missing_scope <x>", path=BACKUP, host=HOST)
    assert reply == (
        f"⚠️ The backup could not be attached: missing_scope &lt;x&gt;. It is on server `{HOST}` at `{BACKUP}`."
    )


def test_setup_check_message_names_table_channel_host_and_time() -> None:
    sent = datetime(2026, 2, 1, 9, 30, tzinfo=UTC)
    text, blocks = message.setup_check_message("conversation_log", "#ai-reports", host=HOST, sent_at=sent)
    assert text == (
        f"Test message from Log Retention Console on {HOST}: cleanup reports for conversation_log will arrive here."
    )
    assert "`conversation_log`" in blocks[0]["text"]["text"] and "#ai-reports" in blocks[0]["text"]["text"]
    assert blocks[1]["elements"][0]["text"].startswith("Sent 2026-02-01 09:30:00 UTC.")


def test_message_and_guidance_modules_do_no_io() -> None:
    """The pure modules import nothing that touches the host, the disk, the clock or the network."""
    io_modules = (
        "os",
        "socket",
        "time",
        "urllib.request",
        "http",
        "requests",
        "slack_sdk",
        "subprocess",
        "shutil",
    )
    for name in ("message.py", "guidance.py"):
        tree = ast.parse((Path(message.__file__).parent / name).read_text())
        imported = {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        imported |= {
            node.module or ""
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and not node.level
        }
        bad = {m for m in imported if any(m == io or m.startswith(io + ".") for io in io_modules)}
        assert not bad, (name, bad)
