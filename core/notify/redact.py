"""Secrets never leave in a message, an outcome's detail or a log line.

The bot token and the webhook URL (itself a secret: whoever has it can post) are
removed by value, and anything shaped like a Slack token, a webhook path or a URL
password is removed by pattern, so a secret that reached a text some other way
(an exception message, a proxy URL) is caught too. Pure, except that
the logger of :func:`redacting_logger` writes log records.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from ..config import Settings
from ..masking import redact as mask_secrets

_TOKEN_RE = re.compile(r"xox[a-z]-[A-Za-z0-9-]+")
_HOOK_RE = re.compile(r"(hooks\.slack(?:-gov)?\.com/)\S+")
_USERINFO_RE = re.compile(r"(\w+://)[^/\s:@]+:[^/\s@]+@")


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """The strings that must never appear in a detail or log line, longest first."""
    out = [s.strip() for s in (settings.slack_bot_token, settings.slack_webhook_url) if s and s.strip()]
    if settings.slack_webhook_url:
        path = urlsplit(settings.slack_webhook_url.strip()).path
        if len(path) > 8:  # the path alone is the webhook's secret part
            out.append(path)
    return tuple(sorted(out, key=len, reverse=True))


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with each secret, and anything shaped like a Slack token, webhook path or
    URL password, replaced by ``[redacted]``; then :func:`core.masking.redact` (the database
    URL's secrets, secret query parameters)."""
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    text = _TOKEN_RE.sub("xox?-[redacted]", text)
    text = _HOOK_RE.sub(r"\1[redacted]", text)
    return mask_secrets(_USERINFO_RE.sub(r"\1[redacted]@", text))


class _Redact(logging.Filter):
    """Rewrites each record of its logger as its redacted text; drops tracebacks (they could carry a URL)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage(), self.secrets), None
        record.exc_info = record.exc_text = None
        return True


def redacting_logger(name: str, secrets: Sequence[str]) -> logging.Logger:
    """A logger for one report whose every line is redacted; slack_sdk's clients log through it.

    A plain :class:`logging.Logger` (slack_sdk reads its ``level``), not registered
    with :mod:`logging` (it lives as long as the report), whose records go on to the
    handlers of ``logging.getLogger(name)`` and its ancestors. Side effect: log records.
    """
    logger = logging.Logger(name)
    logger.parent = logging.getLogger(name)
    logger.addFilter(_Redact(secrets))
    return logger
