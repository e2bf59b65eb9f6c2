"""Formatting for display: counts, sizes, UTC timestamps, durations, run outcomes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

STATUS_LABELS = {
    "success": "✅ success",
    "nothing_to_do": "➖ nothing to do",
    "dry_run": "🔍 dry run",
    "failed": "❌ failed",
    "interrupted": "⚠️ interrupted",
    "running": "⏳ running",
}
NOTIFY_LABELS = {"sent": "✅ sent", "skipped": "➖ skipped", "failed": "❌ failed", "pending": "⏳ pending"}


def count(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def human_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def ts(value: datetime | None, *, seconds: bool = False) -> str:
    """An aware timestamp as ``2026-01-31 14:05 UTC``; naive values are taken as UTC."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def day(value: datetime | None) -> str:
    """The UTC date only (for narrow metric cards; the full timestamp goes in the help)."""
    return "—" if value is None else ts(value)[:10]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def share(part: int, whole: int) -> str:
    if not whole:
        return "—"
    pct = 100 * part / whole
    return f"{pct:.1f} %" if pct >= 0.1 or part == 0 else "< 0.1 %"


def file_name(path: str | None) -> str:
    return Path(path).name if path else "—"


def status(value: str) -> str:
    return STATUS_LABELS.get(value, value)


def notification(value: str) -> str:
    return NOTIFY_LABELS.get(value, value)


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")
