"""Sending reports: the bot-token path, the webhook path, channel resolution, the test message.

Side effects: HTTP requests to Slack (through :mod:`.transport`, within one
SLACK_TIMEOUT_S deadline per report), reading the backup file to attach it, log
lines. Nothing here raises: Slack's ``"ok": false`` answers, exhausted retries and
unexpected errors all become a :class:`NotifyOutcome` whose ``detail`` tells the
operator what to fix. Tokens and webhook URLs are removed from every detail and log line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import threading
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from ..config import Settings
from ..models import NotifyStatus, RunResult, RunStatus
from . import guidance, message
from .message import BackupDelivery, BackupFacts, Blocks
from .redact import RedactingLogger, redact, secrets_of
from .transport import Answer, Deadline, NoAnswer, Outgoing, send

log = logging.getLogger(__name__)

_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{6,}$")  # names are lower case, so never match
_MAX_PAGES = 200  # conversations.list pages of 200 channels
_NOT_CONFIGURED = "Slack is not configured"

_channel_ids: dict[tuple[str, str, str], str] = {}  # (API base, token hash, name) -> ID
_channel_lock = threading.Lock()


@dataclass(frozen=True)
class NotifyOutcome:
    """What became of a report, with operator guidance in ``detail``."""

    status: NotifyStatus
    detail: str | None = None


def notify_run(
    settings: Settings, result: RunResult, *, recovered: Sequence[RunResult] = ()
) -> NotifyOutcome:
    """Report a finished run to Slack; never raises.

    Posts the summary (and, with a bot token, the backup file in its thread);
    ``recovered`` are interrupted runs this run found and recovered. Dry runs send
    nothing; ``nothing_to_do`` is sent only if SLACK_NOTIFY_NOTHING_TO_DO is on
    (or interrupted runs were recovered). Side effects: HTTP requests, reading the
    backup file, log lines.
    """
    try:
        if result.status == RunStatus.DRY_RUN:
            return NotifyOutcome(NotifyStatus.SKIPPED, "dry run: no report is sent")
        if (
            result.status == RunStatus.NOTHING_TO_DO
            and not (recovered or result.recovered_runs)
            and not settings.slack_notify_nothing_to_do
        ):
            return NotifyOutcome(NotifyStatus.SKIPPED, "nothing to do, and SLACK_NOTIFY_NOTHING_TO_DO is off")
        if not (settings.slack_bot_token or settings.slack_webhook_url):
            return NotifyOutcome(NotifyStatus.SKIPPED, _NOT_CONFIGURED)
        report = _Report(settings)
        backup = backup_facts(result.backup_file, settings)
        text, blocks = message.run_summary(result, host=report.host, backup=backup, recovered=recovered)
        if settings.slack_bot_token:
            upload = backup.path if backup.delivery is BackupDelivery.UPLOAD else None
            outcome = report.via_bot(text, blocks, upload=upload)
        else:
            outcome = report.via_webhook(text, blocks)
    except Exception as exc:  # the contract: a report never fails the cleanup
        outcome = _unexpected(exc, secrets_of(settings))
    log.info("Slack report of run %s: %s%s", result.run_id, outcome.status, _suffix(outcome))
    return outcome


def send_test_message(settings: Settings) -> NotifyOutcome:
    """Post a short test message (no file) the way reports go; never raises.

    With a bot token the detail names the resolved channel, and warns when the
    token visibly lacks ``files:write``. Side effects: HTTP requests, log lines.
    """
    try:
        if not (settings.slack_bot_token or settings.slack_webhook_url):
            return NotifyOutcome(NotifyStatus.SKIPPED, _NOT_CONFIGURED)
        report = _Report(settings)
        now = datetime.now(UTC)
        if settings.slack_bot_token:
            text, blocks = message.setup_check_message(
                settings.table, report.label, host=report.host, sent_at=now
            )
            outcome = report.via_bot(text, blocks, upload=None, check_scopes=True)
        else:
            text, blocks = message.setup_check_message(
                settings.table, "this channel", host=report.host, sent_at=now
            )
            outcome = report.via_webhook(text, blocks)
            if outcome.status is NotifyStatus.SENT:
                outcome = NotifyOutcome(NotifyStatus.SENT, "test message posted through the incoming webhook")
    except Exception as exc:  # never raises: the dashboard and CLI show the detail
        outcome = _unexpected(exc, secrets_of(settings))
    log.info("Slack test message: %s%s", outcome.status, _suffix(outcome))
    return outcome


def clear_channel_cache() -> None:
    """Forget channel name -> ID resolutions (tests; after changing SLACK_CHANNEL). Thread-safe."""
    with _channel_lock:
        _channel_ids.clear()


def backup_facts(path: str | None, settings: Settings) -> BackupFacts:
    """How a run's backup travels with its report. Reads the file's size; raises nothing."""
    if not path:
        return message.NO_BACKUP
    where = os.path.abspath(path)
    limit = settings.slack_upload_max_bytes
    try:
        size = os.path.getsize(path)
    except OSError:
        return BackupFacts(BackupDelivery.MISSING, where, None, limit)
    if not settings.slack_bot_token:
        return BackupFacts(BackupDelivery.WEBHOOK, where, size, limit)
    if size > limit:
        return BackupFacts(BackupDelivery.TOO_BIG, where, size, limit)
    return BackupFacts(BackupDelivery.UPLOAD, where, size, limit)


# ---------------------------------------------------------------------------


class _Failure(Exception):
    """A Slack step failed; ``detail`` is guidance, ``error`` Slack's code if any. Stays in this module."""

    def __init__(self, detail: str, error: str | None = None) -> None:
        super().__init__(detail)
        self.detail, self.error = detail, error


@dataclass(frozen=True)
class _Posted:
    """A Web API call's successful answer."""

    data: dict[str, Any]
    headers: Mapping[str, str]


class _Report:
    """One report's delivery: its deadline, the secrets to redact, the channel label, the Slack calls."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.deadline = Deadline(settings.slack_timeout_s)
        self.secrets = secrets_of(settings)
        self.log = RedactingLogger(logging.getLogger(f"{__package__}.transport"), self.secrets)
        self.host = socket.gethostname()
        raw = settings.slack_channel.strip()
        self.label = raw if _CHANNEL_ID.match(raw) else "#" + raw.lstrip("#")
        base = settings.slack_api_base_url
        self.where = urlsplit(base).netloc or base

    def failed(self, detail: str) -> NotifyOutcome:
        """A failed outcome whose detail is redacted."""
        return NotifyOutcome(NotifyStatus.FAILED, redact(detail, self.secrets))

    def request(self, req: Outgoing, where: str) -> Answer:
        """One request within the deadline; no answer at all raises _Failure with guidance."""
        try:
            return send(req, deadline=self.deadline, log=self.log)
        except NoAnswer as exc:
            raise _Failure(
                guidance.transport_guidance(exc.method, where, exc.reason, self.settings.slack_timeout_s)
            ) from None

    def api(self, method: str, *, payload: dict[str, Any], form: bool = False) -> _Posted:
        """Call a Web API method (JSON body, or form-encoded where Slack takes no JSON).

        Raises _Failure with guidance unless Slack answered ``"ok": true``.
        """
        body = urlencode(payload) if form else json.dumps(payload)
        ctype = "application/x-www-form-urlencoded" if form else "application/json; charset=utf-8"
        req = Outgoing(
            method=method,
            url=self.settings.slack_api_base_url.rstrip("/") + "/" + method,
            body=body.encode(),
            headers={
                "Authorization": f"Bearer {(self.settings.slack_bot_token or '').strip()}",
                "Content-Type": ctype,
            },
        )
        answer = self.request(req, self.where)
        data = answer.json()
        if answer.status == 200 and data is not None and data.get("ok"):
            return _Posted(data, answer.headers)
        detail = guidance.api_error_guidance(
            method, answer.status, data, label=self.label, timeout_s=self.settings.slack_timeout_s
        )
        raise _Failure(detail, str((data or {}).get("error") or "") or None)

    def via_bot(
        self, text: str, blocks: Blocks, *, upload: str | None, check_scopes: bool = False
    ) -> NotifyOutcome:
        """Post through the Web API, then attach the file ``upload`` in the message's thread."""
        try:
            channel = self.resolve_channel()
            posted = self.api(
                "chat.postMessage",
                payload={
                    "channel": channel,
                    "text": text,
                    "blocks": blocks,
                    "unfurl_links": False,
                    "unfurl_media": False,
                },
            )
        except _Failure as failure:
            if failure.error == "channel_not_found":
                self.forget_channel()
            return self.failed(failure.detail)
        ts = str(posted.data.get("ts") or "")
        if upload is not None:
            try:
                self.attach(upload, channel=channel, thread_ts=ts)
            except _Failure as failure:
                detail = redact(failure.detail, self.secrets)
                reply = message.upload_failed_reply(detail, path=upload, host=self.host)
                with contextlib.suppress(_Failure):  # best effort: say so in the thread too
                    self.api("chat.postMessage", payload={"channel": channel, "thread_ts": ts, "text": reply})
                return self.failed(
                    f"summary posted to {self.label}, but the backup was not attached: {failure.detail}"
                )
            log.info("attached %s to the report in %s", os.path.basename(upload), self.label)
        if not check_scopes:
            return NotifyOutcome(NotifyStatus.SENT)
        scopes = posted.headers.get("x-oauth-scopes")
        return NotifyOutcome(NotifyStatus.SENT, guidance.setup_check_detail(self.label, channel, scopes))

    def attach(self, path: str, *, channel: str, thread_ts: str) -> None:
        """Slack's external upload: ask for an upload URL, POST the bytes there, complete it in the thread.

        Side effect: reads the whole file (SLACK_UPLOAD_MAX_BYTES bounds it). Raises _Failure.
        """
        name = os.path.basename(path)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise _Failure(guidance.backup_gone(path)) from None
        asked = self.api(
            "files.getUploadURLExternal", payload={"filename": name, "length": len(data)}, form=True
        )
        url, file_id = str(asked.data.get("upload_url") or ""), str(asked.data.get("file_id") or "")
        self.upload_bytes(url, data)
        files = json.dumps([{"id": file_id, "title": name}])
        self.api(
            "files.completeUploadExternal",
            payload={"files": files, "channel_id": channel, "thread_ts": thread_ts},
            form=True,
        )

    def upload_bytes(self, url: str, data: bytes) -> None:
        """POST the file's bytes to the upload URL Slack handed out (retried like every request).

        Raises _Failure with guidance unless the file server answered 200.
        """
        host = urlsplit(url).netloc or "?"
        if not url.lower().startswith(("https://", "http://")):
            raise _Failure("files_upload_v2: Slack returned an upload URL that is not http(s)")
        try:
            answer = send(Outgoing("files_upload_v2", url, body=data), deadline=self.deadline, log=self.log)
        except NoAnswer as exc:
            raise _Failure(
                guidance.upload_no_answer(
                    host, exc.reason, attempts=exc.attempts, timeout_s=self.settings.slack_timeout_s
                )
            ) from None
        if answer.status != 200:
            raise _Failure(guidance.upload_refused(host, answer.status, attempts=answer.attempts))
        self.log.debug("uploaded %d bytes to %s (attempt %d)", len(data), host, answer.attempts)

    def via_webhook(self, text: str, blocks: Blocks) -> NotifyOutcome:
        """Post through the incoming webhook (no file)."""
        url = (self.settings.slack_webhook_url or "").strip()
        if not url.lower().startswith(("https://", "http://")):
            return self.failed("SLACK_WEBHOOK_URL is not an http(s) URL")
        body = json.dumps({"text": text, "blocks": blocks, "unfurl_links": False, "unfurl_media": False})
        req = Outgoing(
            "webhook", url, body=body.encode(), headers={"Content-Type": "application/json; charset=utf-8"}
        )
        try:
            answer = self.request(req, urlsplit(url).hostname or "the webhook host")
        except _Failure as failure:
            return self.failed(failure.detail)
        if answer.status == 200:
            return NotifyOutcome(NotifyStatus.SENT)
        return self.failed(guidance.webhook_guidance(answer.status, answer.text().strip()[:200]))

    def cache_key(self) -> tuple[str, str, str]:
        """This report's key in the channel cache: API base, a hash of the token, the channel name."""
        token = (self.settings.slack_bot_token or "").strip()
        return (
            self.settings.slack_api_base_url,
            hashlib.sha256(token.encode()).hexdigest()[:16],
            self.settings.slack_channel.strip().lstrip("#").lower(),
        )

    def forget_channel(self) -> None:
        """Drop this channel from the cache (Slack said it does not exist: renamed or deleted)."""
        with _channel_lock:
            _channel_ids.pop(self.cache_key(), None)

    def resolve_channel(self) -> str:
        """SLACK_CHANNEL as an ID: as is if it is one, else from conversations.list (cached per process).

        Raises _Failure (channel_not_found) when no visible channel has that name.
        """
        raw = self.settings.slack_channel.strip()
        if _CHANNEL_ID.match(raw):
            return raw
        key = self.cache_key()
        name = key[2]
        with _channel_lock:
            cached = _channel_ids.get(key)
        if cached:
            return cached
        cursor, seen = "", 0
        for _ in range(_MAX_PAGES):
            query = {"types": "public_channel,private_channel", "exclude_archived": "true", "limit": 200}
            page = self.api(
                "conversations.list", payload={**query, **({"cursor": cursor} if cursor else {})}, form=True
            )
            for channel in page.data.get("channels") or []:
                seen += 1
                if channel.get("name") == name and channel.get("id"):
                    with _channel_lock:
                        _channel_ids[key] = str(channel["id"])
                    log.info("resolved Slack channel #%s to %s", name, channel["id"])
                    return str(channel["id"])
            cursor = str((page.data.get("response_metadata") or {}).get("next_cursor") or "")
            if not cursor:
                break
        raise _Failure(guidance.channel_not_listed(name, seen), "channel_not_found")


def _unexpected(exc: BaseException, secrets: Sequence[str]) -> NotifyOutcome:
    """A bug or an unforeseen error as a failed outcome (redacted); the traceback goes to the debug log."""
    detail = redact(f"unexpected error while reporting to Slack: {type(exc).__name__}: {exc}", secrets)
    log.error("%s", detail)
    log.debug("%s", redact("".join(traceback.format_exception(exc)), secrets))
    return NotifyOutcome(NotifyStatus.FAILED, detail)


def _suffix(outcome: NotifyOutcome) -> str:
    return f" ({outcome.detail})" if outcome.detail else ""
