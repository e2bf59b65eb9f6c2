"""Display helpers only the pages need (narrow metric cards, shares, file names).

Counts, sizes, durations, times and status labels come from :mod:`core.present` and
``RunStatus.label`` / ``NotifyStatus.label``, as in the CLI and Slack.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from core.present import timestamp


def day(value: datetime | None) -> str:
    """The date in the display zone only (for narrow metric cards; the full timestamp goes in the help)."""
    return "—" if value is None else timestamp(value)[:10]


def share(part: int, whole: int) -> str:
    """``part`` as a percentage of ``whole``: '12.5 %', '< 0.1 %'; '—' when ``whole`` is 0."""
    if not whole:
        return "—"
    pct = 100 * part / whole
    return f"{pct:.1f} %" if pct >= 0.1 or part == 0 else "< 0.1 %"


def file_name(path: str | None) -> str:
    """The file name of a path, without its folder; '—' for none."""
    return Path(path).name if path else "—"
