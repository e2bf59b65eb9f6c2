"""Slack message building: Block Kit blocks plus a plain-text fallback, no I/O.

Every function here is pure: it turns a :class:`RunResult` (and a few facts the
caller measured, such as the backup's size) into ``(text, blocks)`` ready for
``chat.postMessage`` or an incoming webhook. Sending lives in :mod:`core.notify`.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from .config import Settings
from .models import RunResult

Blocks = list[dict[str, Any]]

# Block Kit limits (https://docs.slack.dev/reference/block-kit/blocks):
HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
MAX_RECOVERED_SHOWN = 10

_HEADLINE = {
    "success": "✅ Log cleanup done",
    "nothing_to_do": "💤 Log cleanup: nothing to do",
    "failed": "🔴 Log cleanup FAILED",
    "interrupted": "⚠️ Log cleanup interrupted",
}

NO_UNBACKED_DELETE = "No row was deleted that is not in a verified backup."


def escape(text: str) -> str:
    """``text`` safe inside Slack mrkdwn: ``&``, ``<`` and ``>`` escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: str) -> str:
    """``text`` as an inline code span (escaped; backticks cannot end the span)."""
    return "`" + escape(text).replace("`", "'") + "`"


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover - loop always returns


def human_duration(seconds: float) -> str:
    """3.25 -> '3.2 s', 125 -> '2 min 5 s'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s"


def utc_text(value: datetime | None) -> str:
    """An aware datetime as '2026-01-31 00:00:00 UTC' ('—' for None)."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def checksum_prefix(sha256: str | None) -> str | None:
    """The first 12 hex digits of a checksum, enough to tell backups apart."""
    return sha256[:12] if sha256 else None


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _truncate(text, SECTION_MAX)}}


def _fields(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": _truncate(f"*{label}*\n{value}", FIELD_MAX)}
            for label, value in pairs[:10]
        ],
    }


def _header(text: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": _truncate(text, HEADER_MAX), "emoji": True},
    }


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _truncate(text, SECTION_MAX)}]}


def backup_location(path: str) -> str:
    """Where a backup lives, for a message: host name and absolute path."""
    return f"on server {code(socket.gethostname())} at {code(os.path.abspath(path))}"


def backup_note(kind: str, path: str | None, size: int | None, limit: int) -> str | None:
    """One mrkdwn sentence about the backup file's delivery, or None without a backup.

    ``kind``: ``upload`` (it follows in the thread), ``too_big``, ``webhook`` (webhooks
    carry no files) or ``missing`` (the path does not exist on this server).
    """
    if not path:
        return None
    where = backup_location(path)
    if kind == "upload":
        return "The backup file is attached in this message's thread."
    if kind == "too_big":
        return (
            f"Backup not attached: {human_bytes(size or 0)} is over the {human_bytes(limit)} upload limit "
            f"(SLACK_UPLOAD_MAX_BYTES). It is {where}."
        )
    if kind == "webhook":
        return f"Backup not attached (webhook reports carry no files). It is {where}."
    return f"Backup file not found {where}; check BACKUP_DIR."


def run_summary(
    result: RunResult,
    *,
    recovered: Sequence[RunResult] = (),
    backup_size: int | None = None,
    note: str | None = None,
) -> tuple[str, Blocks]:
    """The report of one run: ``(fallback text, blocks)``.

    Names the table, status, rows archived and deleted, cutoff, backup file name,
    size and checksum prefix, duration and trigger; a failed run also gets its error
    and the statement that no row left the table without a verified backup.
    """
    table = result.table
    headline = _HEADLINE.get(result.status, f"Log cleanup: {result.status}")
    blocks: Blocks = [_header(f"{headline}: {table}")]
    lead = _lead_sentence(result)
    blocks.append(_section(lead))
    blocks.append(
        _fields(
            [
                ("Table", code(table)),
                ("Status", escape(result.status)),
                ("Rows archived", f"{result.rows_archived:,}"),
                ("Rows deleted", f"{result.rows_deleted:,}"),
                ("Cutoff", f"older than {utc_text(result.cutoff)}"),
                ("Duration", human_duration(result.duration_s)),
                ("Trigger", escape(result.trigger)),
                ("Run", code(result.run_id)),
            ]
        )
    )
    backup_line = _backup_line(result, backup_size)
    if backup_line or note:
        blocks.append(_section("\n".join(x for x in (backup_line, note) if x)))
    recovered_text = _recovered_text(result, recovered)
    if recovered_text:
        blocks.append(_section(recovered_text))
    blocks.append(
        _context(
            f"Log Retention Console on {code(socket.gethostname())} · started {utc_text(result.started_at)}"
            f" · finished {utc_text(result.finished_at)}"
        )
    )
    return _fallback_text(result, recovered), blocks


def _lead_sentence(result: RunResult) -> str:
    cutoff = utc_text(result.cutoff)
    if result.status == "failed":
        error = (result.error or "unknown error").replace("```", "'''")
        kept = (
            f"{result.rows_deleted:,} rows were deleted before it stopped, each of them in a verified backup."
            if result.rows_deleted
            else "No row was deleted."
        )
        return f"*The cleanup stopped with an error:*\n```{escape(error)}```\n*{NO_UNBACKED_DELETE}* {kept}"
    if result.status == "nothing_to_do":
        return f"No rows older than {cutoff}; nothing was archived or deleted."
    if result.status == "success":
        return (
            f"Archived *{result.rows_archived:,}* rows older than {cutoff} to a verified backup "
            f"and deleted *{result.rows_deleted:,}* of them from the table."
        )
    if result.error:
        return f"{escape(result.error)}\n{NO_UNBACKED_DELETE}"
    return f"Run status: {escape(result.status)}."


def _backup_line(result: RunResult, size: int | None) -> str | None:
    if not result.backup_file:
        return None
    parts = [f"*Backup* {code(os.path.basename(result.backup_file))}"]
    size = size if size is not None else result.backup_bytes
    if size is not None:
        parts.append(human_bytes(size))
    if result.sha256:
        parts.append(f"sha256 {code((checksum_prefix(result.sha256) or '') + '…')}")
    return " · ".join(parts)


def _recovered_text(result: RunResult, recovered: Sequence[RunResult]) -> str | None:
    if recovered:
        lines = []
        for run in recovered[:MAX_RECOVERED_SHOWN]:
            backup = f", backup {code(os.path.basename(run.backup_file))}" if run.backup_file else ""
            lines.append(
                f"• run {code(run.run_id)} (started {utc_text(run.started_at)}): {escape(run.status)}, "
                f"{run.rows_deleted:,} rows deleted{backup}"
            )
        if len(recovered) > MAX_RECOVERED_SHOWN:
            lines.append(f"• and {len(recovered) - MAX_RECOVERED_SHOWN} more")
    elif result.recovered_runs:
        lines = [f"• run {code(run_id)}" for run_id in result.recovered_runs[:MAX_RECOVERED_SHOWN]]
    else:
        return None
    return "♻️ *Interrupted run found and recovered* before this run:\n" + "\n".join(lines)


def _fallback_text(result: RunResult, recovered: Sequence[RunResult]) -> str:
    """One line for notifications and clients that do not show blocks."""
    head = f"Log cleanup {result.status} on {result.table}"
    if result.status == "failed":
        text = f"{head}: {result.error or 'unknown error'}. {NO_UNBACKED_DELETE}"
    else:
        text = (
            f"{head}: {result.rows_archived:,} rows archived, {result.rows_deleted:,} deleted, "
            f"cutoff {utc_text(result.cutoff)}"
        )
        if result.backup_file:
            prefix = checksum_prefix(result.sha256)
            text += f", backup {os.path.basename(result.backup_file)}"
            text += f" (sha256 {prefix}…)" if prefix else ""
        text += "."
    count = len(recovered) or len(result.recovered_runs)
    if count:
        text += f" Recovered {count} interrupted run(s)."
    return _truncate(text, SECTION_MAX)


def upload_failed_reply(detail: str, path: str) -> str:
    """Thread reply when the summary went out but the backup could not be attached."""
    return f"⚠️ The backup could not be attached: {escape(detail)}. It is {backup_location(path)}."


def setup_check_message(table: str, channel_label: str) -> tuple[str, Blocks]:
    """The "send test message" text: says where reports will arrive, and from where."""
    host = socket.gethostname()
    text = f"Test message from Log Retention Console on {host}: cleanup reports for {table} will arrive here."
    blocks: Blocks = [
        _section(
            f"👋 *Test message from Log Retention Console* on {code(host)}.\n"
            f"Cleanup reports for table {code(table)} will arrive in {escape(channel_label)}."
        ),
        _context(f"Sent {utc_text(datetime.now(UTC))}. Nothing was archived or deleted."),
    ]
    return text, blocks


def backup_plan(path: str | None, settings: Settings) -> tuple[str, int | None]:
    """(kind, size): ``upload``, ``too_big``, ``webhook``, ``missing`` or ``none``. Reads file metadata."""
    if not path:
        return "none", None
    try:
        size = os.path.getsize(path)
    except OSError:
        return "missing", None
    if not settings.slack_bot_token:
        return "webhook", size
    if size > settings.slack_upload_max_bytes:
        return "too_big", size
    return "upload", size


# --- Secrets never leave in a message, detail or log line ---

_TOKEN_RE = re.compile(r"xox[a-z]-[A-Za-z0-9-]+")
_HOOK_RE = re.compile(r"(hooks\.slack(?:-gov)?\.com/)\S+")
_USERINFO_RE = re.compile(r"(\w+://)[^/\s:@]+:[^/\s@]+@")


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """The strings that must never appear in a detail or log line."""
    out = [s.strip() for s in (settings.slack_bot_token, settings.slack_webhook_url) if s and s.strip()]
    if settings.slack_webhook_url:
        path = urlsplit(settings.slack_webhook_url.strip()).path
        if len(path) > 8:
            out.append(path)
    return tuple(sorted(out, key=len, reverse=True))


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with each secret, and anything shaped like a Slack token, webhook path or
    URL password, replaced by ``[redacted]``."""
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    text = _TOKEN_RE.sub("xox?-[redacted]", text)
    text = _HOOK_RE.sub(r"\1[redacted]", text)
    return _USERINFO_RE.sub(r"\1[redacted]@", text)


# --- Operator guidance for Slack errors (shown in run history, the dashboard, the CLI) ---

SCOPE_BY_METHOD = {
    "chat.postMessage": "chat:write",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
    "files_upload_v2": "files:write",
    "conversations.list": "channels:read (public channels) and groups:read (private channels)",
}
_BAD_TOKEN = ("invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive")
_NEW_WEBHOOK = "create a new incoming webhook and update SLACK_WEBHOOK_URL"
WEBHOOK_GUIDANCE = {
    "invalid_token": f"the webhook URL is no longer valid (webhook revoked or app removed); {_NEW_WEBHOOK}",
    "no_service": f"the webhook URL is no longer valid (webhook disabled or app removed); {_NEW_WEBHOOK}",
    "no_team": f"the webhook's workspace no longer exists; {_NEW_WEBHOOK}",
    "channel_not_found": f"the webhook's channel was deleted; {_NEW_WEBHOOK}",
    "channel_is_archived": f"the webhook's channel is archived; unarchive it or {_NEW_WEBHOOK}",
    "action_prohibited": "a workspace admin restricted posting in the webhook's channel",
    "invalid_payload": "Slack refused the message as malformed (a bug in this program: please report it)",
}


def slack_error_guidance(error: str, method: str, label: str, data: dict[str, Any]) -> str:
    """Slack's error code (``"ok": false``) as what the operator should do."""
    if error == "not_in_channel":
        return (
            f"not_in_channel: the bot is not a member of {label}; in Slack open {label} and type "
            "/invite @<your app's name>, then send a test message"
        )
    if error == "channel_not_found":
        return (
            f"channel_not_found: {label} does not exist or the bot cannot see it; check SLACK_CHANNEL "
            "(a name such as ai-reports or an ID such as C0123ABCD); for a private channel invite the bot first"
        )
    if error in _BAD_TOKEN:
        return (
            f"{error}: Slack rejected SLACK_BOT_TOKEN; copy the Bot User OAuth Token (xoxb-…) from the "
            "app's OAuth & Permissions page, and reinstall the app if it was removed"
        )
    if error == "missing_scope":
        needed = str(data.get("needed") or SCOPE_BY_METHOD.get(method, "a scope"))
        return (
            f"missing_scope: the bot token lacks {needed} (needed by {method}); add it under OAuth & "
            "Permissions → Bot Token Scopes, reinstall the app, and update SLACK_BOT_TOKEN if it changed"
        )
    if error in ("is_archived", "channel_is_archived"):
        return f"{error}: {label} is archived; unarchive it or set SLACK_CHANNEL to another channel"
    return f"{method} failed: {error or 'unexpected answer from Slack'}"


def api_error_guidance(method: str, response: Any, label: str, timeout_s: float) -> str:
    """A failed Web API call (a SlackResponse, after slack_sdk's retries) as guidance."""
    api_url = str(getattr(response, "api_url", "") or "")
    method = api_url.rsplit("/", 1)[-1].split("?", 1)[0] or method  # files_upload_v2 -> its API call
    data = response.data if isinstance(response.data, dict) else {}
    status = response.status_code
    if status == 429:
        return f"{method}: rate limited by Slack (HTTP 429); retries did not fit in SLACK_TIMEOUT_S ({timeout_s:g} s)"
    if status >= 500:
        return (
            f"{method}: Slack answered HTTP {status} after retries; Slack may be having an outage "
            "(https://slack-status.com)"
        )
    return slack_error_guidance(str(data.get("error") or ""), method, label, data)


def transport_guidance(method: str, where: str, exc: BaseException, timeout_s: float) -> str:
    """A request that got no HTTP answer (refused, timed out, DNS...) as guidance."""
    reason = getattr(exc, "reason", exc)
    if isinstance(exc, FileNotFoundError):
        return f"{method}: the backup file is gone: {exc.filename}"
    if isinstance(reason, TimeoutError):
        return f"{method}: no answer from {where} within SLACK_TIMEOUT_S ({timeout_s:g} s)"
    if isinstance(reason, ConnectionRefusedError):
        return (
            f"{method}: cannot connect to Slack at {where}: connection refused (after retries); "
            "check SLACK_API_BASE_URL / SLACK_WEBHOOK_URL and the network or proxy"
        )
    return f"{method}: cannot reach Slack at {where}: {reason}"


def webhook_guidance(status: int, body: str) -> str:
    """An incoming webhook's non-200 answer (after retries) as guidance."""
    if status == 429 or status >= 500:
        return f"webhook: Slack answered HTTP {status} after retries"
    hint = WEBHOOK_GUIDANCE.get(body, f"Slack refused the incoming webhook (HTTP {status})")
    return f"webhook: {body or status}: {hint}"


def channel_not_listed(name: str, seen: int) -> str:
    """SLACK_CHANNEL named a channel that conversations.list does not show the bot."""
    return (
        f"channel_not_found: no channel named #{name} among the {seen} channels the bot can see; check "
        "SLACK_CHANNEL, invite the bot first if the channel is private, or set SLACK_CHANNEL to the channel ID (C…)"
    )


def setup_check_detail(label: str, channel_id: str, scopes: str | None) -> str:
    """The test message's detail; warns when Slack's X-OAuth-Scopes header lacks files:write."""
    detail = f"test message posted to {label} ({channel_id})"
    if scopes is not None and "files:write" not in {x.strip() for x in str(scopes).split(",")}:
        detail += "; warning: the token lacks files:write, so backups will not be attached (add the scope, reinstall the app)"
    return detail
