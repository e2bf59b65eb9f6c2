"""core.notify against a local fake Slack server, over real HTTP."""

from __future__ import annotations

import ast
import dataclasses
import gzip
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core import notify, present
from core.config import Settings
from core.models import RunResult
from core.notify import NotifyOutcome, message, notify_run, send_test_message
from tests.fakeslack import TOKEN, WEBHOOK_PATH, FakeSlack, Reply, closed_port

CHANNEL_ID = "C0AIREPORT"  # the fake's id for #ai-reports, on the third page of conversations.list


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No channel cache from another test; no proxy from the environment in the way of 127.0.0.1."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    notify.clear_channel_cache()
    yield
    notify.clear_channel_cache()


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def backup(tmp_path: Path) -> Path:
    """A small csv.gz backup file with unpredictable bytes."""
    rows = "".join(
        f"{i},session-{i},{os.urandom(8).hex()},2025-11-0{i % 9 + 1} 10:00:00+00:00\n" for i in range(200)
    )
    path = tmp_path / "conversation_log-20260131T020000Z-ab12cd.csv.gz"
    path.write_bytes(gzip.compress(("id,session_id,message,created_at\n" + rows).encode()))
    return path


def bot_settings(slack: FakeSlack, **changes: Any) -> Settings:
    return dataclasses.replace(
        Settings(slack_bot_token=TOKEN, slack_api_base_url=slack.api_url, slack_timeout_s=10.0), **changes
    )


def webhook_settings(slack: FakeSlack, **changes: Any) -> Settings:
    return dataclasses.replace(Settings(slack_webhook_url=slack.webhook_url, slack_timeout_s=10.0), **changes)


def run_result(backup: Path | None, **changes: Any) -> RunResult:
    data = backup.read_bytes() if backup else b""
    result = RunResult(
        run_id="20260131T020000Z-ab12cd",
        status="success",
        table="conversation_log",
        cutoff=datetime(2026, 1, 1, tzinfo=UTC),
        rows_archived=1234,
        rows_deleted=1234,
        backup_file=str(backup) if backup else None,
        manifest_file=str(backup).replace(".csv.gz", ".manifest.json") if backup else None,
        sha256=hashlib.sha256(data).hexdigest() if backup else None,
        notification="pending",
        duration_s=3.25,
        trigger="cli",
        started_at=datetime(2026, 1, 31, 2, 0, 0, tzinfo=UTC),
        finished_at=datetime(2026, 1, 31, 2, 0, 3, tzinfo=UTC),
        backup_bytes=len(data) if backup else None,
    )
    return dataclasses.replace(result, **changes)


def message_text(payload: dict[str, Any]) -> str:
    """Every text of a chat.postMessage / webhook payload: fallback, blocks, fields."""
    parts = [payload.get("text") or ""]
    for block in payload.get("blocks") or []:
        if "text" in block:
            parts.append(block["text"]["text"])
        parts += [f["text"] for f in block.get("fields", [])]
        parts += [e.get("text", "") for e in block.get("elements", [])]
    return "\n".join(parts)


def summary(slack: FakeSlack) -> dict[str, Any]:
    posts = slack.calls("chat.postMessage")
    assert posts, "no chat.postMessage received"
    return posts[0].json


# --- what the report says --------------------------------------------------


def test_summary_names_table_status_rows_cutoff_file_checksum_and_trigger(
    slack: FakeSlack, backup: Path
) -> None:
    result = run_result(backup, trigger="http")
    outcome = notify_run(bot_settings(slack), result)
    assert outcome == NotifyOutcome("sent")
    payload = summary(slack)
    text = message_text(payload)
    assert payload["text"].startswith("Log cleanup success on conversation_log")
    for expected in (
        "conversation_log",
        "success",
        "1,234",
        "2026-01-01 00:00:00 UTC",
        backup.name,
        result.sha256[:12],
        "http",
        "3.2 s",
        result.run_id,
    ):
        assert expected in text, expected
    assert result.sha256[:12] in payload["text"] and backup.name in payload["text"]
    assert [b["type"] for b in payload["blocks"]][0] == "header"


def test_failed_run_report_says_the_error_and_that_no_unbacked_row_was_deleted(
    slack: FakeSlack, backup: Path
) -> None:
    result = run_result(
        backup, status="failed", rows_deleted=500, error="lost connection to the database <batch 3>"
    )
    assert notify_run(bot_settings(slack), result).status == "sent"
    text = message_text(summary(slack))
    assert "FAILED" in text
    assert "lost connection to the database &lt;batch 3&gt;" in text  # escaped for mrkdwn
    assert present.NO_UNBACKED_DELETE in text  # the one wording of the invariant, as the CLI says it
    assert "500 rows were deleted before it stopped" in text
    assert "lost connection to the database <batch 3>" in summary(slack)["text"]


def test_recovered_interrupted_runs_are_reported(slack: FakeSlack, backup: Path) -> None:
    interrupted = run_result(backup, run_id="20260130T020000Z-dead01", status="interrupted", rows_deleted=77)
    result = run_result(None, status="nothing_to_do", rows_archived=0, rows_deleted=0)
    outcome = notify_run(
        bot_settings(slack, slack_notify_nothing_to_do=False), result, recovered=[interrupted]
    )
    assert outcome.status == "sent"
    text = message_text(summary(slack))
    assert "Interrupted run found and recovered" in text
    assert "20260130T020000Z-dead01" in text and "77 rows deleted" in text
    assert "Recovered 1 interrupted run" in summary(slack)["text"]


def test_nothing_to_do_is_sent_only_when_enabled(slack: FakeSlack) -> None:
    result = run_result(None, status="nothing_to_do", rows_archived=0, rows_deleted=0)
    off = notify_run(bot_settings(slack, slack_notify_nothing_to_do=False), result)
    assert off.status == "skipped" and "SLACK_NOTIFY_NOTHING_TO_DO" in (off.detail or "")
    assert slack.received == []
    assert notify_run(bot_settings(slack), result).status == "sent"
    assert "nothing was archived or deleted" in message_text(summary(slack))
    assert slack.calls("files.getUploadURLExternal") == []


def test_dry_run_sends_nothing(slack: FakeSlack, backup: Path) -> None:
    outcome = notify_run(bot_settings(slack), run_result(backup, status="dry_run", rows_deleted=0))
    assert outcome.status == "skipped"
    assert slack.received == []


def test_without_token_or_webhook_nothing_is_sent() -> None:
    outcome = notify_run(Settings(), run_result(None))
    assert outcome == NotifyOutcome("skipped", "Slack is not configured")


# --- the backup file --------------------------------------------------------


def test_uploaded_bytes_equal_the_backup_file(slack: FakeSlack, backup: Path) -> None:
    assert notify_run(bot_settings(slack), run_result(backup)).status == "sent"
    (asked,) = slack.calls("files.getUploadURLExternal")
    assert asked.params["filename"] == backup.name and int(asked.params["length"]) == backup.stat().st_size
    assert list(slack.uploads.values()) == [backup.read_bytes()]


def test_file_goes_to_the_channel_id_resolved_over_a_paginated_list(slack: FakeSlack, backup: Path) -> None:
    assert notify_run(bot_settings(slack, slack_channel="#ai-reports"), run_result(backup)).status == "sent"
    pages = slack.calls("conversations.list")
    assert len(pages) == 3  # page_size 2: ai-reports is on the third page
    assert [p.params.get("cursor") for p in pages] == [None, "2", "4"]
    assert pages[0].params["types"] == "public_channel,private_channel"
    assert summary(slack)["channel"] == CHANNEL_ID
    (completed,) = slack.calls("files.completeUploadExternal")
    assert completed.params["channel_id"] == CHANNEL_ID


def test_channel_name_is_resolved_once_per_process(slack: FakeSlack, backup: Path) -> None:
    notify_run(bot_settings(slack), run_result(backup))
    notify_run(bot_settings(slack), run_result(backup))
    assert len(slack.calls("conversations.list")) == 3
    assert [c.json["channel"] for c in slack.calls("chat.postMessage")] == [CHANNEL_ID, CHANNEL_ID]


def test_channel_given_as_an_id_is_used_without_listing(slack: FakeSlack, backup: Path) -> None:
    assert notify_run(bot_settings(slack, slack_channel=CHANNEL_ID), run_result(backup)).status == "sent"
    assert slack.calls("conversations.list") == []
    assert slack.calls("files.completeUploadExternal")[0].params["channel_id"] == CHANNEL_ID


def test_upload_is_a_reply_in_the_summary_thread(slack: FakeSlack, backup: Path) -> None:
    notify_run(bot_settings(slack), run_result(backup))
    (posted,) = slack.calls("chat.postMessage")
    (completed,) = slack.calls("files.completeUploadExternal")
    assert "thread_ts" not in posted.json  # the summary itself starts the thread
    assert posted.reply is not None and posted.reply.data is not None
    assert completed.params["thread_ts"] == posted.reply.data["ts"]


def test_oversize_backup_is_not_uploaded_and_message_says_where_it_is(slack: FakeSlack, backup: Path) -> None:
    outcome = notify_run(bot_settings(slack, slack_upload_max_bytes=100), run_result(backup))
    assert outcome.status == "sent"
    assert slack.calls("files.getUploadURLExternal") == [] and slack.uploads == {}
    text = message_text(summary(slack))
    assert "Backup not attached" in text and "SLACK_UPLOAD_MAX_BYTES" in text
    assert str(backup.resolve()) in text


def test_webhook_only_posts_the_summary_and_no_file(slack: FakeSlack, backup: Path) -> None:
    outcome = notify_run(webhook_settings(slack), run_result(backup))
    assert outcome == NotifyOutcome("sent")
    (hook,) = slack.calls("webhook")
    assert [r.method for r in slack.received] == ["webhook"]
    text = message_text(hook.json)
    assert "conversation_log" in text and backup.name in text and "1,234" in text
    assert "webhook reports carry no files" in text and str(backup.resolve()) in text
    assert hook.json["blocks"][0]["type"] == "header"


# --- retries and failures -----------------------------------------------------


def test_rate_limited_post_is_retried_after_retry_after_then_sent(slack: FakeSlack, backup: Path) -> None:
    slack.script(
        "chat.postMessage",
        Reply(status=429, data={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "1"}),
    )
    started = time.monotonic()
    outcome = notify_run(bot_settings(slack), run_result(backup))
    assert outcome == NotifyOutcome("sent")
    assert len(slack.calls("chat.postMessage")) == 2
    assert time.monotonic() - started >= 1.0  # waited as Slack asked
    assert list(slack.uploads.values()) == [backup.read_bytes()]


def test_upload_post_is_retried_after_a_server_error(slack: FakeSlack, backup: Path) -> None:
    slack.script("upload", Reply(status=500, body="upstream error"))
    outcome = notify_run(bot_settings(slack), run_result(backup))
    assert outcome == NotifyOutcome("sent")
    assert len(slack.calls("upload")) == 2
    assert list(slack.uploads.values()) == [backup.read_bytes()]


def test_webhook_server_error_is_retried_then_sent(slack: FakeSlack, backup: Path) -> None:
    slack.script("webhook", Reply(status=503, body="busy"))
    assert notify_run(webhook_settings(slack), run_result(backup)) == NotifyOutcome("sent")
    assert len(slack.calls("webhook")) == 2


def test_retry_after_longer_than_the_deadline_fails_at_once(slack: FakeSlack, backup: Path) -> None:
    slack.always(
        "chat.postMessage",
        Reply(status=429, data={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "30"}),
    )
    started = time.monotonic()
    outcome = notify_run(
        bot_settings(slack, slack_channel=CHANNEL_ID, slack_timeout_s=5.0), run_result(backup)
    )
    assert time.monotonic() - started < 1.0  # did not wait for a retry that could not fit
    assert outcome.status == "failed"
    assert "chat.postMessage: rate limited by Slack (HTTP 429)" in (outcome.detail or "")
    assert len(slack.calls("chat.postMessage")) == 1


def test_upload_server_error_throughout_is_said_after_the_summary(slack: FakeSlack, backup: Path) -> None:
    slack.always("upload", Reply(status=502, body="bad gateway"))
    outcome = notify_run(bot_settings(slack, slack_timeout_s=8.0), run_result(backup))
    assert outcome.status == "failed"
    assert "the upload to Slack's file server 127.0.0.1" in (outcome.detail or "")
    assert "failed after 3 attempt(s): HTTP 502" in (outcome.detail or "")
    assert len(slack.calls("upload")) == 3 and slack.calls("files.completeUploadExternal") == []


def test_server_error_throughout_fails_with_clear_detail_in_bounded_time(
    slack: FakeSlack, backup: Path
) -> None:
    slack.always("chat.postMessage", Reply(status=500, body="<html>Internal Server Error</html>"))
    started = time.monotonic()
    outcome = notify_run(bot_settings(slack, slack_timeout_s=8.0), run_result(backup))
    assert time.monotonic() - started < 8.5
    assert outcome.status == "failed"
    assert "chat.postMessage: Slack answered HTTP 500 after retries" in (outcome.detail or "")
    assert len(slack.calls("chat.postMessage")) == 3  # first try and two retries


def test_refused_connection_fails_with_clear_detail_in_bounded_time(backup: Path) -> None:
    port = closed_port()
    settings = Settings(
        slack_bot_token=TOKEN, slack_api_base_url=f"http://127.0.0.1:{port}/api/", slack_timeout_s=8.0
    )
    started = time.monotonic()
    outcome = notify_run(settings, run_result(backup))
    assert time.monotonic() - started < 8.5
    assert outcome.status == "failed"
    assert f"cannot connect to Slack at 127.0.0.1:{port}: connection refused" in (outcome.detail or "")


def test_stalled_slack_is_abandoned_within_slack_timeout(slack: FakeSlack, backup: Path) -> None:
    slack.always("chat.postMessage", Reply(stall=30))
    started = time.monotonic()
    outcome = notify_run(bot_settings(slack, slack_timeout_s=1.5), run_result(backup))
    assert time.monotonic() - started < 3.0
    assert outcome.status == "failed" and "within SLACK_TIMEOUT_S (1.5 s)" in (outcome.detail or "")


def test_bot_outside_the_channel_is_told_to_invite_it(slack: FakeSlack, backup: Path) -> None:
    outcome = notify_run(bot_settings(slack, slack_channel="other"), run_result(backup))
    assert outcome.status == "failed"
    assert outcome.detail and outcome.detail.startswith("not_in_channel:")
    assert "/invite @" in outcome.detail and "#other" in outcome.detail


def test_wrong_token_is_reported_as_invalid_auth(slack: FakeSlack, backup: Path) -> None:
    wrong = "xoxb-9999999999-8888888888-WRONGtokenWRONGtoken"
    outcome = notify_run(bot_settings(slack, slack_bot_token=wrong), run_result(backup))
    assert outcome.status == "failed"
    assert (
        outcome.detail and outcome.detail.startswith("invalid_auth:") and "SLACK_BOT_TOKEN" in outcome.detail
    )
    assert wrong not in outcome.detail


def test_unknown_channel_name_is_channel_not_found(slack: FakeSlack, backup: Path) -> None:
    outcome = notify_run(bot_settings(slack, slack_channel="no-such-channel"), run_result(backup))
    assert outcome.status == "failed"
    assert (
        outcome.detail
        and outcome.detail.startswith("channel_not_found:")
        and "SLACK_CHANNEL" in outcome.detail
    )
    assert slack.calls("chat.postMessage") == []


@pytest.mark.parametrize(
    ("method", "reply", "expected"),
    [
        (
            "chat.postMessage",
            Reply.error("channel_not_found"),
            "channel_not_found: #ai-reports does not exist",
        ),
        ("chat.postMessage", Reply.error("not_in_channel"), "/invite @"),
        ("chat.postMessage", Reply.error("invalid_auth"), "Slack rejected SLACK_BOT_TOKEN"),
        (
            "chat.postMessage",
            Reply.error("missing_scope", needed="chat:write", provided="files:write"),
            "lacks chat:write (needed by chat.postMessage)",
        ),
        (
            "conversations.list",
            Reply.error("missing_scope"),
            "lacks channels:read (public channels) and groups:read",
        ),
        (
            "files.getUploadURLExternal",
            Reply.error("missing_scope"),
            "lacks files:write (needed by files.getUploadURLExternal)",
        ),
        (
            "files.completeUploadExternal",
            Reply.error("missing_scope", needed="files:write"),
            "lacks files:write",
        ),
    ],
)
def test_each_slack_error_gives_its_guidance(
    slack: FakeSlack, backup: Path, method: str, reply: Reply, expected: str
) -> None:
    slack.always(method, reply)
    outcome = notify_run(bot_settings(slack), run_result(backup))
    assert outcome.status == "failed"
    assert expected in (outcome.detail or "")


def test_failed_upload_after_the_summary_is_failed_and_said_in_the_thread(
    slack: FakeSlack, backup: Path
) -> None:
    slack.always("files.getUploadURLExternal", Reply.error("missing_scope", needed="files:write"))
    outcome = notify_run(bot_settings(slack), run_result(backup))
    assert outcome.status == "failed"
    assert outcome.detail and outcome.detail.startswith(
        "summary posted to #ai-reports, but the backup was not attached"
    )
    first, reply = slack.calls("chat.postMessage")
    assert reply.json["thread_ts"] and reply.json["channel"] == CHANNEL_ID
    assert "could not be attached" in reply.json["text"] and str(backup.resolve()) in reply.json["text"]


def test_webhook_error_gives_its_guidance(slack: FakeSlack, backup: Path) -> None:
    slack.always("webhook", Reply(status=404, body="no_service"))
    outcome = notify_run(webhook_settings(slack), run_result(backup))
    assert outcome.status == "failed"
    assert (
        outcome.detail
        and outcome.detail.startswith("webhook: no_service:")
        and "SLACK_WEBHOOK_URL" in outcome.detail
    )


def test_unexpected_error_is_a_failed_outcome_not_an_exception(
    slack: FakeSlack, backup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"boom with {TOKEN}")

    monkeypatch.setattr(message, "run_summary", broken)
    outcome = notify_run(bot_settings(slack), run_result(backup))
    assert outcome.status == "failed"
    assert outcome.detail and "RuntimeError" in outcome.detail and TOKEN not in outcome.detail


# --- secrets ----------------------------------------------------------------


def test_token_and_webhook_url_never_appear_in_logs_or_details(
    slack: FakeSlack, backup: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outcomes = [
        notify_run(bot_settings(slack), run_result(backup)),
        send_test_message(bot_settings(slack)),
        notify_run(
            bot_settings(slack, slack_api_base_url=f"http://127.0.0.1:{closed_port()}/api/"),
            run_result(backup),
        ),
        notify_run(webhook_settings(slack), run_result(backup)),
    ]
    slack.always("webhook", Reply(status=403, body="invalid_token"))
    slack.always("chat.postMessage", Reply.error("invalid_auth"))
    outcomes += [
        notify_run(webhook_settings(slack), run_result(backup)),
        notify_run(bot_settings(slack), run_result(backup)),
    ]
    assert [o.status for o in outcomes] == ["sent", "sent", "failed", "sent", "failed", "failed"]
    assert "Sending a request" in caplog.text  # the HTTP debug lines were captured, redacted
    secret_path = WEBHOOK_PATH.rsplit("/", 1)[-1]
    for text in [caplog.text, *(o.detail or "" for o in outcomes)]:
        assert TOKEN not in text and slack.webhook_url not in text and secret_path not in text
    assert "[redacted]" in caplog.text


# --- send test message ------------------------------------------------------------


def test_send_test_message_posts_without_a_file(slack: FakeSlack) -> None:
    outcome = send_test_message(bot_settings(slack))
    assert outcome.status == "sent" and outcome.detail == f"test message posted to #ai-reports ({CHANNEL_ID})"
    assert "Test message from Log Retention Console" in message_text(summary(slack))
    assert slack.calls("files.getUploadURLExternal") == []


def test_send_test_message_warns_when_the_token_lacks_files_write(slack: FakeSlack) -> None:
    slack.scopes = "chat:write,channels:read,groups:read"
    outcome = send_test_message(bot_settings(slack))
    assert outcome.status == "sent" and "lacks files:write" in (outcome.detail or "")


def test_send_test_message_through_the_webhook(slack: FakeSlack) -> None:
    outcome = send_test_message(webhook_settings(slack))
    assert outcome.status == "sent"
    assert "Test message" in slack.calls("webhook")[0].json["text"]


def test_send_test_message_reports_the_failure_guidance(slack: FakeSlack) -> None:
    outcome = send_test_message(bot_settings(slack, slack_channel="other"))
    assert outcome.status == "failed" and outcome.detail and outcome.detail.startswith("not_in_channel:")


# --- slack_sdk does the talking ---------------------------------------------------


def test_web_api_calls_and_the_webhook_go_through_slack_sdk(slack: FakeSlack, backup: Path) -> None:
    assert notify_run(bot_settings(slack), run_result(backup)).status == "sent"
    assert notify_run(webhook_settings(slack), run_result(backup)).status == "sent"
    by_sdk = [r for r in slack.received if r.method != "upload"]
    assert {r.method for r in by_sdk} == {
        "conversations.list",
        "chat.postMessage",
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
        "webhook",
    }
    for req in by_sdk:  # slack_sdk's User-Agent: "Python/3.x slackclient/<version> <OS>"
        assert "slackclient/" in req.headers.get("user-agent", ""), req.method
    (upload,) = slack.calls("upload")  # the one POST slack_sdk has no public method for
    assert "slackclient/" not in upload.headers.get("user-agent", "")


def test_retries_are_slack_sdks_public_handlers_kept_within_the_deadline() -> None:
    from urllib.error import URLError

    from slack_sdk.http_retry import (
        ConnectionErrorRetryHandler,
        HttpRequest,
        HttpResponse,
        RateLimitErrorRetryHandler,
        RetryState,
    )
    from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler

    from core.notify.retry import Deadline, WithinDeadline, retry_handlers

    log = logging.getLogger("test")
    handlers = retry_handlers(Deadline(10.0), log)
    assert all(isinstance(h, WithinDeadline) for h in handlers)
    inner = [type(h.inner) for h in handlers]  # type: ignore[attr-defined]
    assert inner[0] is RateLimitErrorRetryHandler and inner[2] is ConnectionErrorRetryHandler
    assert issubclass(inner[1], ServerErrorRetryHandler)

    request = HttpRequest(method="POST", url="http://127.0.0.1/api/x", headers={})
    refused = URLError(ConnectionRefusedError(111, "Connection refused"))
    timed_out = URLError(TimeoutError("timed out"))
    bad_gateway = HttpResponse(status_code=502, headers={})

    def retries(deadline_s: float, **kw: Any) -> bool:
        return any(
            h.can_retry(state=RetryState(), request=request, **kw)
            for h in retry_handlers(Deadline(deadline_s), log)
        )

    assert retries(10.0, error=refused) and retries(10.0, response=bad_gateway)
    assert not retries(10.0, error=timed_out)  # the attempt's timeout was all the time left
    assert not retries(10.0, error=TimeoutError("read timed out"))
    assert not retries(0.6, error=refused) and not retries(
        0.6, response=bad_gateway
    )  # 0.5 s wait + 0.5 s attempt
    limited = HttpResponse(status_code=429, headers={"Retry-After": "3"})
    assert retries(10.0, response=limited) and not retries(4.0, response=limited)
    spent = RetryState(current_attempt=2)  # two retries already made: no third for a 5xx
    assert not any(h.can_retry(state=spent, request=request, response=bad_gateway) for h in handlers)


# --- no private slack_sdk API ---------------------------------------------------


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_slack_sdk_uses(source: str) -> list[str]:
    """Private names ``source`` reaches into: ``_modules`` or ``_names`` imported from slack_sdk,
    ``_methods`` overridden in a slack_sdk subclass, and ``obj._attr`` on anything but ``self``/``cls``
    (so ``client._upload_file`` is caught even when ``client`` is a local variable)."""
    tree = ast.parse(source)
    sdk_names: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "slack_sdk":
            parts = [*(node.module or "").split("."), *(a.name for a in node.names)]
            found += [f"import {p}" for p in parts if _private(p)]
            sdk_names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "slack_sdk":
                    found += [f"import {p}" for p in alias.name.split(".") if _private(p)]
                    sdk_names.add((alias.asname or alias.name).split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root: ast.AST = node.value
            while isinstance(root, ast.Attribute | ast.Call | ast.Subscript):
                root = root.func if isinstance(root, ast.Call) else root.value
            if not (isinstance(root, ast.Name) and root.id in ("self", "cls")):
                found.append(f"{getattr(root, 'id', '?')}….{node.attr}")
        if isinstance(node, ast.ClassDef) and any(
            isinstance(b, ast.Name) and b.id in sdk_names for b in node.bases
        ):
            found += [
                f"{node.name}.{f.name}"
                for f in node.body
                if isinstance(f, ast.FunctionDef) and _private(f.name)
            ]
    return found


def test_the_checker_finds_private_slack_sdk_uses() -> None:
    bad = (
        "from slack_sdk import WebClient\n"
        "from slack_sdk.http_retry.builtin_interval_calculators import _x\n"
        "class C(WebClient):\n    def _upload_file(self): ...\n"
        "def f(client: WebClient):\n    client._upload_file()\n    return WebClient()._get_url()\n"
    )
    assert sorted(private_slack_sdk_uses(bad)) == sorted(
        ["import _x", "C._upload_file", "client…._upload_file", "WebClient…._get_url"]
    )
    assert private_slack_sdk_uses("import slack_sdk\nslack_sdk.web._x\n") == ["slack_sdk…._x"]
    clean = "from slack_sdk.http_retry import RateLimitErrorRetryHandler\nclass A:\n    def f(self): self._y = 1\n"
    assert private_slack_sdk_uses(clean) == []


def test_notify_uses_no_private_slack_sdk_name() -> None:
    sources = sorted(Path(notify.__file__).parent.glob("*.py"))
    assert len(sources) >= 5
    for path in sources:
        assert private_slack_sdk_uses(path.read_text()) == [], path.name
