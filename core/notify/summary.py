"""One Slack report for a set of runs (``run --all``, the trigger's multi-policy job).

The sending is :mod:`.send`'s (same deadline, retries, redaction, bot or webhook); only the
message differs (:func:`.message.runs_summary`), and no file is attached: each backup is
named in the summary and stays where the run left it.
"""

from __future__ import annotations

import logging

from .. import i18n
from ..config import Settings
from ..models import NotifyStatus, PoliciesResult, RunStatus
from . import message
from .redact import secrets_of
from .send import _NOT_CONFIGURED, NotifyOutcome, _Report, _unexpected

log = logging.getLogger(__name__)


def notify_runs(settings: Settings, result: PoliciesResult) -> NotifyOutcome:
    """Report every policy's run in one message; never raises (as :func:`.send.notify_run`)."""
    try:
        quiet = all(r.status == RunStatus.NOTHING_TO_DO for r in result.runs)
        if quiet and not settings.slack_notify_nothing_to_do:
            return NotifyOutcome(NotifyStatus.SKIPPED, "nothing to do, and SLACK_NOTIFY_NOTHING_TO_DO is off")
        if not (settings.slack_bot_token or settings.slack_webhook_url):
            return NotifyOutcome(NotifyStatus.SKIPPED, _NOT_CONFIGURED)
        report = _Report(settings)
        with i18n.use(language=settings.app_language, zone=settings.display_timezone):
            text, blocks = message.runs_summary(result, host=report.host)
        if settings.slack_bot_token:
            outcome = report.via_bot(text, blocks, upload=None)
        else:
            outcome = report.via_webhook(text, blocks)
    except Exception as exc:  # the contract: a report never fails the cleanup
        outcome = _unexpected(exc, secrets_of(settings))
    log.info("Slack summary of %d runs: %s", len(result.runs), outcome.status)
    return outcome
