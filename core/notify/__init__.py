"""Slack reports of cleanup runs, through the Web API (bot token) or an incoming webhook.

Read in this order:

- :mod:`.message`: what a report says (Block Kit blocks and fallback text; pure),
- :mod:`.send`: how it gets there (bot token or webhook, channel lookup, file upload),
- :mod:`.transport`: the HTTP requests, their retries and the one deadline per report,
- :mod:`.guidance`: Slack's errors turned into what the operator should do (pure),
- :mod:`.redact`: secrets removed from every detail and log line.

Nothing here raises to the caller: a report's fate is a :class:`NotifyOutcome`.
"""

from __future__ import annotations

from .send import NotifyOutcome, clear_channel_cache, notify_run, send_test_message

__all__ = ["NotifyOutcome", "clear_channel_cache", "notify_run", "send_test_message"]
