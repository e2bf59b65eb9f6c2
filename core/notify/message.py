"""Slack messages: Block Kit blocks plus a plain-text fallback. Pure: no I/O.

The words come from :mod:`core.present` (the lead sentence, facts, sizes, durations,
times), so Slack says what the CLI and the dashboard say; this module adds Slack's
markup around them: mrkdwn escaping, code spans, Block Kit blocks and Slack's length
limits. Whatever the sender measured (the host name, the backup's size and absolute
path, the time a test message is sent) comes in as arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import PurePath
from typing import Any

from .. import present
from ..i18n import N_, _, ngettext
from ..models import PoliciesResult, RunResult, RunStatus

Blocks = list[dict[str, Any]]

# Block Kit limits (https://docs.slack.dev/reference/block-kit/blocks):
HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
FIELDS_MAX = 10
MAX_RECOVERED_SHOWN = 10

# In a busy channel a failure must stand out from the routine reports, so Slack's
# header shouts it; every other headline is the presenter's.
_SLACK_HEADLINES = {RunStatus.FAILED: N_("🔴 Log cleanup FAILED")}
_CODE_FACTS = (N_("Table"), N_("Run"))  # facts shown as code spans: names to copy


# The status word of the fallback line: the stable value in English, a word in other languages.
_STATUS_WORDS = (N_("success"), N_("nothing_to_do"), N_("dry_run"), N_("failed"), N_("interrupted"), N_("partial"))


class BackupDelivery(StrEnum):
    """What happens to a run's backup file in its report."""

    UPLOAD = "upload"  # attached in the report's thread
    TOO_BIG = "too_big"  # over SLACK_UPLOAD_MAX_BYTES
    WEBHOOK = "webhook"  # webhooks carry no files
    MISSING = "missing"  # the path does not exist on this server
    NONE = "none"  # the run wrote no backup


@dataclass(frozen=True)
class BackupFacts:
    """What the sender found out about a run's backup, for the message."""

    delivery: BackupDelivery
    path: str | None = None  # absolute, as the operator would look for it on ``host``
    size: int | None = None
    limit: int = 0  # SLACK_UPLOAD_MAX_BYTES


NO_BACKUP = BackupFacts(BackupDelivery.NONE)


def escape(text: str) -> str:
    """``text`` safe inside Slack mrkdwn: ``&``, ``<`` and ``>`` escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: str) -> str:
    """``text`` as an inline code span (escaped; a backtick cannot end the span early)."""
    return "`" + escape(text).replace("`", "'") + "`"


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, SECTION_MAX)}}


def _fields(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": truncate(f"*{label}*\n{value}", FIELD_MAX)}
            for label, value in pairs[:FIELDS_MAX]
        ],
    }


def _header(text: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": truncate(text, HEADER_MAX), "emoji": True},
    }


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(text, SECTION_MAX)}]}


def backup_location(path: str, host: str) -> str:
    """Where a backup lives, for a message: the host name and the (absolute) path."""
    return _("on server {host} at {path}").format(host=code(host), path=code(path))


def backup_note(backup: BackupFacts, *, host: str) -> str | None:
    """One mrkdwn sentence about the backup file's delivery, or None without a backup."""
    if backup.delivery is BackupDelivery.NONE or not backup.path:
        return None
    where = backup_location(backup.path, host)
    if backup.delivery is BackupDelivery.UPLOAD:
        return _("The backup file is attached in this message's thread.")
    if backup.delivery is BackupDelivery.TOO_BIG:
        return _("Backup not attached: {size} is over the {limit} upload limit (SLACK_UPLOAD_MAX_BYTES). "
                 "It is {where}.").format(size=present.human_bytes(backup.size),
                                          limit=present.human_bytes(backup.limit), where=where)
    if backup.delivery is BackupDelivery.WEBHOOK:
        return _("Backup not attached (webhook reports carry no files). It is {where}.").format(where=where)
    return _("Backup file not found {where}; check BACKUP_DIR.").format(where=where)


def run_summary(
    result: RunResult,
    *,
    host: str,
    backup: BackupFacts = NO_BACKUP,
    recovered: Sequence[RunResult] = (),
) -> tuple[str, Blocks]:
    """The report of one run: ``(fallback text, blocks)``.

    Names the table, status, rows archived and deleted, cutoff, backup file name,
    size and checksum prefix, duration and trigger; a failed run also gets its error
    and the statement that no row left the table without a verified backup.
    ``recovered`` are the interrupted runs this run found and recovered; ``host``
    is the server the console runs on (named in the context line).
    """
    text = present.describe_run(result)
    headline = _(_SLACK_HEADLINES[RunStatus.FAILED]) if result.status == RunStatus.FAILED else text.headline
    code_facts = {_(label) for label in _CODE_FACTS}
    blocks: Blocks = [
        _header(f"{headline}: {result.table}"),
        _section(_lead(result)),
        _fields(
            [(label, code(value) if label in code_facts else escape(value)) for label, value in text.facts]
        ),
    ]
    backup_text = "\n".join(x for x in (_backup_line(result, backup), backup_note(backup, host=host)) if x)
    if backup_text:
        blocks.append(_section(backup_text))
    recovered_text = _recovered_text(result, recovered)
    if recovered_text:
        blocks.append(_section(recovered_text))
    blocks.append(
        _context(
            _("Log Retention Console on {host} · started {started} · finished {finished}").format(
                host=code(host), started=present.timestamp(result.started_at),
                finished=present.timestamp(result.finished_at))
        )
    )
    return _fallback_text(result, recovered), blocks


def _lead(result: RunResult) -> str:
    """The presenter's lead sentence in mrkdwn; a failure's error goes in a code block."""
    if result.status != RunStatus.FAILED:
        return escape(present.lead_sentence(result))
    error = (result.error or _("unknown error")).replace("```", "'''")  # cannot close the block early
    return (
        f"*{_('The cleanup stopped with an error:')}*\n```{escape(error)}```\n"
        f"*{present.no_unbacked_delete()}* {escape(present.deleted_before_stop(result))}"
    )


def _backup_line(result: RunResult, backup: BackupFacts) -> str | None:
    if not result.backup_file:
        return None
    parts = [f"*{_('Backup')}* {code(PurePath(result.backup_file).name)}"]
    size = backup.size if backup.size is not None else result.backup_bytes
    if size is not None:
        parts.append(present.human_bytes(size))
    prefix = present.checksum_prefix(result.sha256)
    if prefix:
        parts.append(f"sha256 {code(prefix + '…')}")
    return " · ".join(parts)


def _recovered_text(result: RunResult, recovered: Sequence[RunResult]) -> str | None:
    if recovered:
        lines = []
        for run in recovered[:MAX_RECOVERED_SHOWN]:
            backup = _(", backup {file}").format(file=code(PurePath(run.backup_file).name)) if run.backup_file else ""
            lines.append(_("• run {run} (started {started}): {status}, {rows} deleted{backup}").format(
                run=code(run.run_id), started=present.timestamp(run.started_at),
                status=escape(RunStatus(run.status).label), rows=ngettext("{n} row", "{n} rows", run.rows_deleted)
                .format(n=present.count(run.rows_deleted)), backup=backup))
        hidden = len(recovered) - MAX_RECOVERED_SHOWN
    elif result.recovered_runs:
        lines = [_("• run {run}").format(run=code(run_id)) for run_id in result.recovered_runs[:MAX_RECOVERED_SHOWN]]
        hidden = len(result.recovered_runs) - MAX_RECOVERED_SHOWN
    else:
        return None
    if hidden > 0:
        lines.append(_("• and {n} more").format(n=hidden))
    return _("♻️ *Interrupted run found and recovered* before this run:") + "\n" + "\n".join(lines)


def _fallback_text(result: RunResult, recovered: Sequence[RunResult]) -> str:
    """One plain line for notifications and clients that do not show blocks."""
    text = _("Log cleanup {status} on {table}: {lead}").format(
        status=_(str(result.status)), table=result.table, lead=present.lead_sentence(result))
    if result.backup_file and result.status != RunStatus.FAILED:
        prefix = present.checksum_prefix(result.sha256)
        text += " " + _("Backup {file}").format(file=PurePath(result.backup_file).name) + (
            f" (sha256 {prefix}…)." if prefix else ".")
    count = len(recovered) or len(result.recovered_runs)
    if count:
        text += " " + ngettext("Recovered {n} interrupted run.", "Recovered {n} interrupted runs.", count
                               ).format(n=count)
    return truncate(text, SECTION_MAX)


def upload_failed_reply(detail: str, *, path: str, host: str) -> str:
    """Thread reply when the summary went out but the backup could not be attached."""
    return _("⚠️ The backup could not be attached: {detail}. It is {where}.").format(
        detail=escape(detail), where=backup_location(path, host))


def setup_check_message(
    table: str, channel_label: str, *, host: str, sent_at: datetime
) -> tuple[str, Blocks]:
    """The "send test message" text: says where reports will arrive, and from where."""
    text = _("Test message from Log Retention Console on {host}: cleanup reports for {table} will arrive here."
             ).format(host=host, table=table)
    blocks: Blocks = [
        _section(
            _("👋 *Test message from Log Retention Console* on {host}.").format(host=code(host)) + "\n"
            + _("Cleanup reports for table {table} will arrive in {channel}.").format(
                table=code(table), channel=escape(channel_label))
        ),
        _context(_("Sent {when}. Nothing was archived or deleted.").format(when=present.timestamp(sent_at))),
    ]
    return text, blocks


_SET_HEADLINES = {RunStatus.FAILED: N_("🔴 Log cleanup of several tables: a policy FAILED"),
                  RunStatus.LOCKED: N_("⚠️ Log cleanup of several tables: a table was busy"),
                  RunStatus.PARTIAL: N_("⏸️ Log cleanup of several tables: stopped part-way")}


def runs_summary(result: PoliciesResult, *, host: str) -> tuple[str, Blocks]:
    """One report for every policy of ``run --all`` (or the trigger's job): ``(fallback text, blocks)``.

    A line per table (status, rows deleted, backup, error), then the totals.
    """
    lines, deleted = [], 0
    for run in result.runs:
        r = run.result
        deleted += r.rows_deleted
        line = _("• {table}: {status}, {rows} deleted").format(
            table=code(r.table), status=escape(RunStatus(r.status).label),
            rows=ngettext("{n} row", "{n} rows", r.rows_deleted).format(n=present.count(r.rows_deleted)))
        if r.backup_file:
            line += _(", backup {file}").format(file=code(PurePath(r.backup_file).name))
        if r.status == RunStatus.LOCKED:
            line += f" ({escape(_('another cleanup held its lock; nothing was changed'))})"
        elif r.error:
            line += f" ({escape(truncate(r.error, 300))})"
        lines.append(line)
    headline = _(_SET_HEADLINES[result.status]) if result.status in _SET_HEADLINES else _(
        "✅ Log cleanup of several tables done")
    total = _("{policies}, {rows} deleted in all.").format(
        policies=ngettext("{n} policy", "{n} policies", len(result.runs)).format(n=len(result.runs)),
        rows=ngettext("{n} row", "{n} rows", deleted).format(n=present.count(deleted)))
    blocks: Blocks = [_header(headline), _section(truncate("\n".join(lines), SECTION_MAX)),
                      _context(_("Log Retention Console on {host} · {total}").format(host=code(host), total=total))]
    text = _("Log cleanup of {n} tables: {status}; {total}").format(n=len(result.runs), status=result.status.label,
                                                                     total=total)
    return truncate(text, SECTION_MAX), blocks


def expiry_summary(names: Sequence[tuple[str, str, str]], *, retention_days: int | None,
                   host: str) -> tuple[str, Blocks]:
    """The short report of ``expire-backups``: (name, table, where removed from) of each expired backup."""
    text = f"{present.plural(len(names), 'backup')} expired (BACKUP_RETENTION_DAYS={retention_days})"
    lines = [f"• {code(name)} of {code(table)}: removed from {escape(where)}" for name, table, where in names]
    blocks: Blocks = [_header(f"🗑️ {text}"), _section("\n".join(lines)),
                      _context(f"Log Retention Console on {code(host)}")]
    return truncate(text + ": " + ", ".join(n for n, _, _ in names), SECTION_MAX), blocks
