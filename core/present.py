"""One presenter: a run (and its numbers) in words, for the CLI, Slack and the pages.

Pure functions, no I/O. Every front end formats sizes, durations, times and the
sentence that summarises a run through this module, so the three never disagree.
Slack adds its own markup (mrkdwn escaping, Block Kit) around these plain texts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from .i18n import N_, _, display_zone, ngettext, number, time_text, to_display, zone_abbreviation
from .models import RunResult, RunStatus
from .zonedays import day_start

# Said of every failed run: the invariant the batch protocol guarantees (docs/design.md).
NO_UNBACKED_DELETE = N_("No row was deleted without a verified backup.")


def no_unbacked_delete() -> str:
    """:data:`NO_UNBACKED_DELETE` in the current language."""
    return _(NO_UNBACKED_DELETE)


def count(n: int | None) -> str:
    """12345 -> '12,345' (in the current locale); None -> '—'."""
    return number(n)


def plural(n: int, word: str, words: str | None = None) -> str:
    """(1, 'row') -> '1 row'; (2, 'row') -> '2 rows'. English only: translated texts use ngettext."""
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
    """3.25 -> '3.2 s', 125 -> '2 min 05 s', 7300 -> '2 h 01 min' (Korean: '3.2초', '2분 05초'); None -> '—'."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return _("{s} s").format(s=f"{seconds:.1f}")
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return _("{m} min {s} s").format(m=minutes, s=f"{sec:02d}")
    return _("{h} h {m} min").format(h=minutes // 60, m=f"{minutes % 60:02d}")


def timestamp(value: datetime | None, *, seconds: bool = True) -> str:
    """An aware datetime in the display zone with its abbreviation: '2026-01-31 14:05:09 UTC',
    '2026-12-07 09:00 KST' (naive values are taken as UTC); None -> '—'."""
    return time_text(value, seconds=seconds)


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
    RunStatus.SUCCESS: N_("✅ Log cleanup done"),
    RunStatus.NOTHING_TO_DO: N_("➖ Log cleanup: nothing to do"),
    RunStatus.DRY_RUN: N_("🔍 Log cleanup dry run"),
    RunStatus.FAILED: N_("❌ Log cleanup failed"),
    RunStatus.INTERRUPTED: N_("⚠️ Log cleanup interrupted"),
    RunStatus.RUNNING: N_("⏳ Log cleanup running"),
    RunStatus.EXPIRED: N_("🗑️ Backup expired"),
    RunStatus.RESTORED: N_("♻️ Backup restored"),
    RunStatus.PARTIAL: N_("⏸️ Log cleanup stopped part-way"),
    RunStatus.LOCKED: N_("🔒 Log cleanup skipped: the table was busy"),
}


AWAITING_RECOVERY = N_("⚠️ interrupted, awaiting recovery")


def status_label(r: RunResult) -> str:
    """The run's status label; a dead run not yet recovered reads "interrupted, awaiting recovery"."""
    return _(AWAITING_RECOVERY) if r.awaiting_recovery else RunStatus(r.status).label


def skipped_sentence(r: RunResult) -> str:
    """'' or the sentence about old rows kept because other rows still reference them."""
    if not r.rows_skipped:
        return ""
    return " " + ngettext(
        "{n} old row still referenced by other tables (RESTRICT / NO ACTION) was kept.",
        "{n} old rows still referenced by other tables (RESTRICT / NO ACTION) were kept.", r.rows_skipped,
    ).format(n=count(r.rows_skipped))


def lead_sentence(r: RunResult) -> str:
    """The one sentence that says what a run did (plain text, no markup)."""
    v = {"table": r.table, "cutoff": timestamp(r.cutoff), "skipped": skipped_sentence(r)}
    status = RunStatus(r.status)
    if r.awaiting_recovery:
        return _("A cleanup of {table} older than {cutoff} was interrupted; the next cleanup recovers it "
                 "(finishes the backup of the rows it deleted).").format(**v)
    if status is RunStatus.SUCCESS:
        return ngettext(
            "Archived {n} row of {table} older than {cutoff} to a verified backup and deleted {deleted} of "
            "them from the table.{skipped}",
            "Archived {n} rows of {table} older than {cutoff} to a verified backup and deleted {deleted} of "
            "them from the table.{skipped}", r.rows_archived,
        ).format(n=count(r.rows_archived), deleted=count(r.rows_deleted), **v)
    if status is RunStatus.NOTHING_TO_DO and r.rows_skipped:
        return _("No row of {table} older than {cutoff} could go; nothing was archived or deleted.{skipped}"
                 ).format(**v)
    if status is RunStatus.NOTHING_TO_DO:
        return _("No row of {table} is older than {cutoff}; nothing was archived or deleted.").format(**v)
    if status is RunStatus.DRY_RUN:
        return ngettext("Dry run: {n} row of {table} is older than {cutoff}; nothing changed.",
                        "Dry run: {n} rows of {table} are older than {cutoff}; nothing changed.",
                        r.rows_matched).format(n=count(r.rows_matched), **v)
    if status is RunStatus.FAILED:
        return _("The cleanup of {table} failed: {error}. {guarantee} {deleted}").format(
            error=r.error or _("unknown error"), guarantee=no_unbacked_delete(), deleted=deleted_before_stop(r), **v)
    if status is RunStatus.PARTIAL:
        return ngettext(
            "Stopped part-way ({why}): archived {n} row of {table} older than {cutoff} to a verified backup and "
            "deleted it; the next run continues.",
            "Stopped part-way ({why}): archived {n} rows of {table} older than {cutoff} to a verified backup and "
            "deleted them; the next run continues.", r.rows_archived,
        ).format(why=r.error or _("out of time"), n=count(r.rows_archived), **v)
    if status is RunStatus.RUNNING:
        return _("A cleanup of {table} older than {cutoff} is running.").format(**v)
    if status is RunStatus.LOCKED:
        return _("Another cleanup of {table} held its lock, so this one did not run; nothing was changed."
                 ).format(**v)
    if status is RunStatus.RESTORED:
        return ngettext("Restored {n} row into {table}; {skipped} already present.",
                        "Restored {n} rows into {table}; {skipped} already present.", r.rows_matched).format(
            n=count(r.rows_matched), table=r.table, skipped=count(r.rows_skipped))
    return f"{status.label}: {r.table}" + (f": {r.error}" if r.error else "")


def deleted_before_stop(r: RunResult) -> str:
    """What a failed run had deleted before it stopped (plain text): each row is in a verified backup."""
    if r.rows_deleted:
        return ngettext("{n} row was deleted before it stopped, in a verified backup.",
                        "{n} rows were deleted before it stopped, each in a verified backup.",
                        r.rows_deleted).format(n=count(r.rows_deleted))
    return _("No row was deleted.")


def trigger_label(trigger: str) -> str:
    """Who started a run, in words: 'cli', 'dashboard', 'http' (Korean: '명령줄', '대시보드', 'HTTP 트리거')."""
    return _(_TRIGGERS.get(str(trigger), str(trigger)))


_TRIGGERS = {"cli": N_("cli"), "dashboard": N_("dashboard"), "http": N_("http"), "test": N_("test")}


def describe_run(r: RunResult) -> RunText:
    """Headline, lead sentence and facts of one run, as every front end shows them."""
    facts = [
        (_("Table"), r.table),
        (_("Status"), status_label(r)),
        (_("Rows archived"), count(r.rows_archived)),
        (_("Rows deleted"), count(r.rows_deleted)),
        *(((_("Rows skipped"), _("{n} (still referenced)").format(n=count(r.rows_skipped))),)
          if r.rows_skipped else ()),
        *(((_("Notes"), " · ".join(r.notes)),) if r.notes else ()),
        (_("Cutoff"), _("older than {cutoff}").format(cutoff=timestamp(r.cutoff))),
        (_("Duration"), human_duration(r.duration_s)),
        (_("Trigger"), trigger_label(r.trigger)),
        (_("Run"), r.run_id),
    ]
    return RunText(headline=_(_HEADLINES[RunStatus(r.status)]), lead=lead_sentence(r), facts=tuple(facts))


def space_sentence(r: RunResult) -> str | None:
    """The table's space around a run (PostgreSQL size and dead tuples; SQLite file and free pages)."""
    if r.table_bytes_before is None and r.table_bytes_after is None:
        return None
    text = _("Size {before} before, {after} after").format(before=human_bytes(r.table_bytes_before),
                                                           after=human_bytes(r.table_bytes_after))
    if r.dead_tuples is not None:
        text += "; " + ngettext("{n} dead tuple", "{n} dead tuples", r.dead_tuples).format(n=count(r.dead_tuples))
    if r.free_bytes is not None:
        text += "; " + _("{size} of free pages in the file").format(size=human_bytes(r.free_bytes))
    if r.vacuumed is not None:
        text += "; " + (_("VACUUM done") if r.vacuumed else _("VACUUM failed (see the log)"))
    elif r.dead_tuples or r.free_bytes:
        text += " " + _("(VACUUM, or CLEANUP_VACUUM=true, makes it reusable or gives it back)")
    return text + "."


@dataclass(frozen=True)
class RunDay:
    """The runs that started on one day of the display zone: how many, rows deleted, seconds taken."""

    day: date
    runs: int
    rows_deleted: int
    seconds: float


def runs_per_day(runs: Iterable[RunResult]) -> list[RunDay]:
    """Runs grouped by the day they started on in the display zone (DISPLAY_TIMEZONE or the session's
    choice; not the UTC day), oldest day first: what History's per-day chart shows."""
    days: dict[date, list[RunResult]] = {}
    for r in runs:
        days.setdefault(to_display(r.started_at).date(), []).append(r)
    return [RunDay(d, len(rs), sum(r.rows_deleted for r in rs), sum(r.duration_s or 0.0 for r in rs))
            for d, rs in sorted(days.items())]


def zone_label(days: Iterable[date]) -> str:
    """The display zone's abbreviations over ``days``, in order: 'KST'; 'EST/EDT' for days on both sides
    of a DST change; the zone's current one when there are no days. For per-day chart titles."""
    zone = display_zone()
    firsts = [day_start(d, zone) for d in days] or [datetime.now(UTC)]
    return "/".join(dict.fromkeys(zone_abbreviation(to_display(t)) for t in firsts))
