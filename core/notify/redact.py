"""Secrets never leave in a message, an outcome's detail or a log line.

The bot token and the webhook URL (itself a secret: whoever has it can post) are
removed by value, and anything shaped like a Slack token, a webhook path or a URL
password is removed by pattern, so a secret that reached a text some other way
(an exception message, a proxy URL) is caught too. Pure, except that
:class:`RedactingLogger` writes log records.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ..config import Settings

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
    URL password, replaced by ``[redacted]``."""
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    text = _TOKEN_RE.sub("xox?-[redacted]", text)
    text = _HOOK_RE.sub(r"\1[redacted]", text)
    return _USERINFO_RE.sub(r"\1[redacted]@", text)


class RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose every line is redacted; the HTTP layer logs URLs and bodies through it.

    Side effect: writes log records to the wrapped logger. Tracebacks are dropped
    (``exc_info``), since they could carry a URL; the message says enough.
    """

    def __init__(self, logger: logging.Logger, secrets: Sequence[str]) -> None:
        super().__init__(logger, {})
        self.secrets = tuple(secrets)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Log ``msg % args`` at ``level``, redacted; every other method of the adapter comes here."""
        if self.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            kwargs.pop("exc_info", None)
            self.logger.log(level, "%s", redact(text, self.secrets), **kwargs)
