"""Slack message building: Block Kit blocks plus a plain-text fallback, no I/O.

Every function here is pure: it turns a :class:`RunResult` (and a few facts the
caller measured, such as the backup's size) into ``(text, blocks)`` ready for
``chat.postMessage`` or an incoming webhook. Sending lives in :mod:`core.notify`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

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
            {"type": "mrkdwn", "text": _truncate(f"*{label}*\n{value}", FIELD_MAX)} for label, value in pairs[:10]
        ],
    }


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": _truncate(text, HEADER_MAX), "emoji": True}}


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
        blocks.append(_section(" ".join(x for x in (backup_line, note) if x)))
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
            f"{result.rows_deleted:,} rows were deleted before it stopped, all of them in the backup below."
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
        parts.append(f"sha256 {code(checksum_prefix(result.sha256) or '')}…")
    return " · ".join(parts) + "."


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
