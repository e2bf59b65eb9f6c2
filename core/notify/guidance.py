"""Slack's errors as what the operator should do. Pure: no I/O.

A report that fails records one line (``notification_detail``, shown by ``history``,
the dashboard and the CLI) that starts with Slack's error code or the failing call
and says how to fix it; docs/slack.md has the same table for readers.
"""

from __future__ import annotations

from typing import Any

SCOPE_BY_METHOD = {
    "chat.postMessage": "chat:write",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
    "files_upload_v2": "files:write",
    "conversations.list": "channels:read (public channels) and groups:read (private channels)",
}
_BAD_TOKEN = ("invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive")
_NEW_WEBHOOK = "create a new incoming webhook and update SLACK_WEBHOOK_URL"
WEBHOOK_GUIDANCE = {
    "invalid_token": f"the webhook URL is no longer valid (webhook revoked or app removed); {_NEW_WEBHOOK}",
    "no_service": f"the webhook URL is no longer valid (webhook disabled or app removed); {_NEW_WEBHOOK}",
    "no_team": f"the webhook's workspace no longer exists; {_NEW_WEBHOOK}",
    "channel_not_found": f"the webhook's channel was deleted; {_NEW_WEBHOOK}",
    "channel_is_archived": f"the webhook's channel is archived; unarchive it or {_NEW_WEBHOOK}",
    "action_prohibited": "a workspace admin restricted posting in the webhook's channel",
    "invalid_payload": "Slack refused the message as malformed (a bug in this program: please report it)",
}


def slack_error_guidance(error: str, method: str, label: str, data: dict[str, Any]) -> str:
    """Slack's error code (an ``"ok": false`` answer) as what the operator should do."""
    if error == "not_in_channel":
        return (
            f"not_in_channel: the bot is not a member of {label}; in Slack open {label} and type "
            "/invite @<your app's name>, then send a test message"
        )
    if error == "channel_not_found":
        return (
            f"channel_not_found: {label} does not exist or the bot cannot see it; check SLACK_CHANNEL "
            "(a name such as ai-reports or an ID such as C0123ABCD); for a private channel invite the bot first"
        )
    if error in _BAD_TOKEN:
        return (
            f"{error}: Slack rejected SLACK_BOT_TOKEN; copy the Bot User OAuth Token (xoxb-…) from the "
            "app's OAuth & Permissions page, and reinstall the app if it was removed"
        )
    if error == "missing_scope":
        needed = str(data.get("needed") or SCOPE_BY_METHOD.get(method, "a scope"))
        return (
            f"missing_scope: the bot token lacks {needed} (needed by {method}); add it under OAuth & "
            "Permissions → Bot Token Scopes, reinstall the app, and update SLACK_BOT_TOKEN if it changed"
        )
    if error in ("is_archived", "channel_is_archived"):
        return f"{error}: {label} is archived; unarchive it or set SLACK_CHANNEL to another channel"
    return f"{method} failed: {error or 'unexpected answer from Slack'}"


def api_error_guidance(
    method: str, status: int, data: dict[str, Any] | None, *, label: str, timeout_s: float
) -> str:
    """A Web API call that did not succeed (after the retries) as guidance.

    ``status`` is the HTTP status, ``data`` the JSON answer if there was one.
    """
    if status == 429:
        return f"{method}: rate limited by Slack (HTTP 429); retries did not fit in SLACK_TIMEOUT_S ({timeout_s:g} s)"
    if status >= 500:
        return (
            f"{method}: Slack answered HTTP {status} after retries; Slack may be having an outage "
            "(https://slack-status.com)"
        )
    data = data or {}
    return slack_error_guidance(str(data.get("error") or ""), method, label, data)


def transport_guidance(method: str, where: str, reason: BaseException, timeout_s: float) -> str:
    """A request that got no HTTP answer (refused, timed out, DNS...) as guidance."""
    if isinstance(reason, TimeoutError):
        return f"{method}: no answer from {where} within SLACK_TIMEOUT_S ({timeout_s:g} s)"
    if isinstance(reason, ConnectionRefusedError):
        return (
            f"{method}: cannot connect to Slack at {where}: connection refused (after retries); "
            "check SLACK_API_BASE_URL / SLACK_WEBHOOK_URL and the network or proxy"
        )
    return f"{method}: cannot reach Slack at {where}: {reason}"


def upload_refused(host: str, status: int, *, attempts: int) -> str:
    """Slack's file server answered the upload POST with an error status (after retries if worth it)."""
    if status != 429 and status < 500:
        return f"files_upload_v2: Slack's file server {host} refused the upload: HTTP {status}"
    return f"files_upload_v2: the upload to Slack's file server {host} failed after {attempts} attempt(s): HTTP {status}"


def upload_no_answer(host: str, reason: BaseException, *, attempts: int, timeout_s: float) -> str:
    """The upload POST got no answer: timed out, or connection errors after the retries."""
    if isinstance(reason, TimeoutError):
        return transport_guidance("files_upload_v2", host, reason, timeout_s)
    return f"files_upload_v2: the upload to Slack's file server {host} failed after {attempts} attempt(s): {reason}"


def backup_gone(path: str) -> str:
    """The backup file vanished between the run and its upload."""
    return f"files_upload_v2: the backup file is gone: {path}"


def webhook_guidance(status: int, body: str) -> str:
    """An incoming webhook's non-200 answer (after retries) as guidance."""
    if status == 429 or status >= 500:
        return f"webhook: Slack answered HTTP {status} after retries"
    hint = WEBHOOK_GUIDANCE.get(body, f"Slack refused the incoming webhook (HTTP {status})")
    return f"webhook: {body or status}: {hint}"


def channel_not_listed(name: str, seen: int) -> str:
    """SLACK_CHANNEL named a channel that conversations.list does not show the bot."""
    return (
        f"channel_not_found: no channel named #{name} among the {seen} channels the bot can see; check "
        "SLACK_CHANNEL, invite the bot first if the channel is private, or set SLACK_CHANNEL to the channel ID (C…)"
    )


def setup_check_detail(label: str, channel_id: str, scopes: str | None) -> str:
    """The test message's detail; warns when Slack's X-OAuth-Scopes header lacks files:write."""
    detail = f"test message posted to {label} ({channel_id})"
    if scopes is not None and "files:write" not in {x.strip() for x in str(scopes).split(",")}:
        detail += "; warning: the token lacks files:write, so backups will not be attached (add the scope, reinstall the app)"
    return detail
