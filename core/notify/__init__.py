"""Slack reports of cleanup runs, through the Web API (bot token) or an incoming webhook.

Requests go through slack_sdk's public API (``WebClient``, ``WebhookClient``,
``slack_sdk.http_retry``). Read in this order:

- :mod:`.message`: what a report says (Block Kit blocks and fallback text; pure),
- :mod:`.send`: how it gets there (bot token or webhook, channel lookup, file upload),
- :mod:`.retry`: the one deadline per report and slack_sdk's retry handlers kept within it,
- :mod:`.upload`: the one request slack_sdk has no public method for (the upload POST),
- :mod:`.guidance`: Slack's errors turned into what the operator should do (pure),
- :mod:`.redact`: secrets removed from every detail and log line.

Nothing here raises to the caller: a report's fate is a :class:`NotifyOutcome`.
"""

from __future__ import annotations

from .send import NotifyOutcome, clear_channel_cache, notify_run, send_test_message

__all__ = ["NotifyOutcome", "clear_channel_cache", "notify_run", "send_test_message"]
