"""Slack reports (placeholder until the Slack issue lands): records 'skipped'."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .config import Settings
from .models import RunResult


@dataclass(frozen=True)
class NotifyOutcome:
    status: str  # "sent" | "skipped" | "failed"
    detail: str | None = None


def notify_run(
    settings: Settings, result: RunResult, *, recovered: Sequence[RunResult] = ()
) -> NotifyOutcome:
    """Report a finished run to Slack. Never raises."""
    return NotifyOutcome("skipped", "Slack reports are not configured")
