"""The Slack report of ``expire-backups`` run on its own: which backups expired, from where. Never raises."""

from __future__ import annotations

import logging
from typing import Any

from ..models import NotifyStatus
from . import message
from .redact import secrets_of
from .send import NotifyOutcome, _Report, _unexpected

log = logging.getLogger(__name__)


def notify_expiry(settings: Any, result: Any) -> NotifyOutcome:
    """Post the expiry's short report (nothing when nothing expired or it was a dry run)."""
    try:
        if result.dry_run or not result.expired:
            return NotifyOutcome(NotifyStatus.SKIPPED, "nothing expired" if not result.dry_run else "dry run")
        if not (settings.slack_bot_token or settings.slack_webhook_url):
            return NotifyOutcome(NotifyStatus.SKIPPED, "Slack is not configured")
        report = _Report(settings)
        names = [(e.name, e.table, ", ".join(e.removed_from)) for e in result.expired]
        text, blocks = message.expiry_summary(names, retention_days=result.retention_days, host=report.host)
        outcome = (report.via_bot(text, blocks, upload=None) if settings.slack_bot_token
                   else report.via_webhook(text, blocks))
    except Exception as exc:  # the contract: a report never fails what it reports
        outcome = _unexpected(exc, secrets_of(settings))
    log.info("Slack report of expired backups: %s", outcome.status)
    return outcome
