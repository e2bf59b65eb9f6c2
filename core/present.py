"""One presenter: a run (and its numbers) in words, for the CLI, Slack and the pages.

Pure functions, no I/O. Every front end formats sizes, durations, times and the
sentence that summarises a run through this module, so the three never disagree.
Slack adds its own markup (mrkdwn escaping, Block Kit) around these plain texts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from .models import RunResult, RunStatus

# Said of every failed run: the invariant the batch protocol guarantees (docs/design.md).
NO_UNBACKED_DELETE = "No row was deleted without a verified backup."


def count(n: int | None) -> str:
    """12345 -> '12,345'; None -> '—'."""
    return "—" if n is None else f"{n:,}"


def plural(n: int, word: str, words: str | None = None) -> str:
    """(1, 'row') -> '1 row'; (2, 'row') -> '2 rows'."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def human_bytes(n: int | None) -> str:
    """Binary units: 1536 -> '1.5 KiB', 17 -> '17 B'; None -> '—'."""
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n:,} B" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_duration(seconds: float | None) -> str:
    """3.25 -> '3.2 s', 125 -> '2 min 05 s', 7300 -> '2 h 01 min'; None -> '—'."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def timestamp(value: datetime | None, *, seconds: bool = True) -> str:
    """An aware datetime as '2026-01-31 14:05:09 UTC' (naive values are taken as UTC); None -> '—'."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def checksum_prefix(sha256: str | None) -> str | None:
    """The first 12 hex digits of a checksum, enough to tell backups apart."""
    return sha256[:12] if sha256 else None


@dataclass(frozen=True)
class RunText:
    """A run in words: a headline, one lead sentence, and labelled facts in display order."""

    headline: str
    lead: str
    facts: tuple[tuple[str, str], ...]


_HEADLINES = {
    RunStatus.SUCCESS: "✅ Log cleanup done",
    RunStatus.NOTHING_TO_DO: "➖ Log cleanup: nothing to do",
    RunStatus.DRY_RUN: "🔍 Log cleanup dry run",
    RunStatus.FAILED: "❌ Log cleanup failed",
    RunStatus.INTERRUPTED: "⚠️ Log cleanup interrupted",
    RunStatus.RUNNING: "⏳ Log cleanup running",
    RunStatus.EXPIRED: "🗑️ Backup expired",
    RunStatus.PARTIAL: "⏸️ Log cleanup stopped part-way",
}


AWAITING_RECOVERY = "⚠️ interrupted, awaiting recovery"


def status_label(r: RunResult) -> str:
    """The run's status label; a dead run not yet recovered reads "interrupted, awaiting recovery"."""
    return AWAITING_RECOVERY if r.awaiting_recovery else RunStatus(r.status).label


def skipped_sentence(r: RunResult) -> str:
    """'' or the sentence about old rows kept because other rows still reference them."""
    if not r.rows_skipped:
        return ""
    return (f" {plural(r.rows_skipped, 'old row')} still referenced by other tables (RESTRICT / NO ACTION) "
            f"{'was' if r.rows_skipped == 1 else 'were'} kept.")


def lead_sentence(r: RunResult) -> str:
    """The one sentence that says what a run did (plain text, no markup)."""
    cutoff = timestamp(r.cutoff)
    status = RunStatus(r.status)
    if r.awaiting_recovery:
        return (f"A cleanup of {r.table} older than {cutoff} was interrupted; the next cleanup recovers it "
                "(finishes the backup of the rows it deleted).")
    if status is RunStatus.SUCCESS:
        return (f"Archived {plural(r.rows_archived, 'row')} of {r.table} older than {cutoff} to a verified "
                f"backup and deleted {count(r.rows_deleted)} of them from the table.{skipped_sentence(r)}")
    if status is RunStatus.NOTHING_TO_DO and r.rows_skipped:
        return f"No row of {r.table} older than {cutoff} could go; nothing was archived or deleted.{skipped_sentence(r)}"
    if status is RunStatus.NOTHING_TO_DO:
        return f"No row of {r.table} is older than {cutoff}; nothing was archived or deleted."
    if status is RunStatus.DRY_RUN:
        return f"Dry run: {plural(r.rows_matched, 'row')} of {r.table} are older than {cutoff}; nothing changed."
    if status is RunStatus.FAILED:
        return (f"The cleanup of {r.table} failed: {r.error or 'unknown error'}. {NO_UNBACKED_DELETE} "
                f"{deleted_before_stop(r)}")
    if status is RunStatus.PARTIAL:
        return (f"Stopped part-way ({r.error or 'out of time'}): archived {plural(r.rows_archived, 'row')} of "
                f"{r.table} older than {cutoff} to a verified backup and deleted them; the next run continues.")
    if status is RunStatus.RUNNING:
        return f"A cleanup of {r.table} older than {cutoff} is running."
    return f"{status.label}: {r.table}" + (f": {r.error}" if r.error else "")


def deleted_before_stop(r: RunResult) -> str:
    """What a failed run had deleted before it stopped (plain text): each row is in a verified backup."""
    if r.rows_deleted:
        return f"{plural(r.rows_deleted, 'row')} were deleted before it stopped, each in a verified backup."
    return "No row was deleted."


def describe_run(r: RunResult) -> RunText:
    """Headline, lead sentence and facts of one run, as every front end shows them."""
    facts = [
        ("Table", r.table),
        ("Status", status_label(r)),
        ("Rows archived", count(r.rows_archived)),
        ("Rows deleted", count(r.rows_deleted)),
        *((("Rows skipped", f"{count(r.rows_skipped)} (still referenced)"),) if r.rows_skipped else ()),
        *((("Notes", " · ".join(r.notes)),) if r.notes else ()),
        ("Cutoff", f"older than {timestamp(r.cutoff)}"),
        ("Duration", human_duration(r.duration_s)),
        ("Trigger", str(r.trigger)),
        ("Run", r.run_id),
    ]
    return RunText(headline=_HEADLINES[RunStatus(r.status)], lead=lead_sentence(r), facts=tuple(facts))


def space_sentence(r: RunResult) -> str | None:
    """The table's space around a run (PostgreSQL size and dead tuples; SQLite file and free pages)."""
    if r.table_bytes_before is None and r.table_bytes_after is None:
        return None
    text = f"Size {human_bytes(r.table_bytes_before)} before, {human_bytes(r.table_bytes_after)} after"
    if r.dead_tuples is not None:
        text += f"; {plural(r.dead_tuples, 'dead tuple')}"
    if r.free_bytes is not None:
        text += f"; {human_bytes(r.free_bytes)} of free pages in the file"
    if r.vacuumed is not None:
        text += "; VACUUM done" if r.vacuumed else "; VACUUM failed (see the log)"
    elif r.dead_tuples or r.free_bytes:
        text += " (VACUUM, or CLEANUP_VACUUM=true, makes it reusable or gives it back)"
    return text + "."
