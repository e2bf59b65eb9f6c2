"""Sending reports: the bot-token path, the webhook path, channel resolution, the test message.

Side effects: HTTP requests to Slack, within one SLACK_TIMEOUT_S deadline per
report: Web API calls through ``slack_sdk.WebClient``'s public methods, the webhook
through ``slack_sdk.webhook.WebhookClient``, both retried by slack_sdk's retry
handlers (:mod:`.retry`); the upload POST through :mod:`.upload`, reading the backup file to attach it, log
lines. Nothing here raises: Slack's ``"ok": false`` answers, exhausted retries and
unexpected errors all become a :class:`NotifyOutcome` whose ``detail`` tells the
operator what to fix. Tokens and webhook URLs are removed from every detail and log line.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookClient

from .. import i18n
from ..config import Settings
from ..i18n import N_
from ..i18n import _ as tr
from ..models import NotifyStatus, RunResult, RunStatus
from . import guidance, message
from .message import BackupDelivery, BackupFacts, Blocks
from .redact import redact, redacting_logger, secrets_of
from .retry import NO_ANSWER_ERRORS, Deadline, reason_of, retry_handlers
from .upload import NoAnswer, post_bytes

log = logging.getLogger(__name__)

_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{6,}$")  # names are lower case, so never match
_MAX_PAGES = 200  # conversations.list pages of 200 channels
_NOT_CONFIGURED = N_("Slack is not configured")  # details are stored in English, shown translated

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
            return NotifyOutcome(NotifyStatus.SKIPPED, N_("dry run: no report is sent"))
        if (
            result.status == RunStatus.NOTHING_TO_DO
            and not (recovered or result.recovered_runs)
            and not settings.slack_notify_nothing_to_do
        ):
            return NotifyOutcome(NotifyStatus.SKIPPED, N_("nothing to do, and SLACK_NOTIFY_NOTHING_TO_DO is off"))
        if not (settings.slack_bot_token or settings.slack_webhook_url):
            return NotifyOutcome(NotifyStatus.SKIPPED, _NOT_CONFIGURED)
        report = _Report(settings)
        backup = backup_facts(result.backup_file, settings)
        with i18n.use(language=settings.app_language, zone=settings.display_timezone):
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
        with i18n.use(language=settings.app_language, zone=settings.display_timezone):
            label = report.label if settings.slack_bot_token else tr(N_("this channel"))
            text, blocks = message.setup_check_message(settings.table, label, host=report.host, sent_at=now)
        if settings.slack_bot_token:
            outcome = report.via_bot(text, blocks, upload=None, check_scopes=True)
        else:
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
        self.log = redacting_logger(f"{__package__}.http", self.secrets)
        self.retries = retry_handlers(self.deadline, self.log)
        self.host = socket.gethostname()
        raw = settings.slack_channel.strip()
        self.label = raw if _CHANNEL_ID.match(raw) else "#" + raw.lstrip("#")
        base = settings.slack_api_base_url.strip()
        self.base_url = base if base.endswith("/") else base + "/"  # WebClient joins method names to it
        self.where = urlsplit(base).netloc or base

    def failed(self, detail: str) -> NotifyOutcome:
        """A failed outcome whose detail is redacted."""
        return NotifyOutcome(NotifyStatus.FAILED, redact(detail, self.secrets))

    def time_left(self, method: str, where: str) -> float:
        """The next step's socket timeout: the time left of the deadline. Raises _Failure once none is left."""
        left = self.deadline.remaining()
        if left <= 0.05:
            reason = TimeoutError("deadline reached")
            raise _Failure(guidance.transport_guidance(method, where, reason, self.settings.slack_timeout_s))
        return left

    def api(self, method: str, call: Callable[[WebClient], SlackResponse]) -> _Posted:
        """Make one Web API call: ``call`` on a WebClient built for it (timeout: the time left).

        Raises _Failure with guidance unless Slack answered ``"ok": true`` (after the retries).
        """
        client = WebClient(
            token=(self.settings.slack_bot_token or "").strip(),
            base_url=self.base_url,
            timeout=self.time_left(method, self.where),  # type: ignore[arg-type] # urllib takes a float
            retry_handlers=self.retries,
            logger=self.log,
        )
        try:
            response = call(client)
        except SlackApiError as exc:
            answer = exc.response
            data = answer.data if isinstance(answer.data, dict) else None
            detail = guidance.api_error_guidance(
                method, answer.status_code, data, label=self.label, timeout_s=self.settings.slack_timeout_s
            )
            raise _Failure(detail, str((data or {}).get("error") or "") or None) from None
        except NO_ANSWER_ERRORS as exc:
            timeout_s = self.settings.slack_timeout_s
            raise _Failure(
                guidance.transport_guidance(method, self.where, reason_of(exc), timeout_s)
            ) from None
        except SlackClientError as exc:  # e.g. an invalid proxy setting
            raise _Failure(f"{method}: {exc}") from None
        data = response.data if isinstance(response.data, dict) else {}
        return _Posted(dict(data), {str(k).lower(): str(v) for k, v in response.headers.items()})

    def via_bot(
        self, text: str, blocks: Blocks, *, upload: str | None, check_scopes: bool = False
    ) -> NotifyOutcome:
        """Post through the Web API, then attach the file ``upload`` in the message's thread."""
        try:
            channel = self.resolve_channel()
            posted = self.api(
                "chat.postMessage",
                lambda c: c.chat_postMessage(
                    channel=channel, text=text, blocks=blocks, unfurl_links=False, unfurl_media=False
                ),
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
                    self.api(
                        "chat.postMessage",
                        lambda c: c.chat_postMessage(channel=channel, thread_ts=ts, text=reply),
                    )
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
            "files.getUploadURLExternal",
            lambda c: c.files_getUploadURLExternal(filename=name, length=len(data)),
        )
        url, file_id = str(asked.data.get("upload_url") or ""), str(asked.data.get("file_id") or "")
        self.upload_bytes(url, data)
        self.api(
            "files.completeUploadExternal",
            lambda c: c.files_completeUploadExternal(
                files=[{"id": file_id, "title": name}], channel_id=channel, thread_ts=thread_ts
            ),
        )

    def upload_bytes(self, url: str, data: bytes) -> None:
        """POST the file's bytes to the upload URL Slack handed out (:mod:`.upload`; retried like every request).

        Raises _Failure with guidance unless the file server answered 200.
        """
        host = urlsplit(url).netloc or "?"
        if not url.lower().startswith(("https://", "http://")):
            raise _Failure("files_upload_v2: Slack returned an upload URL that is not http(s)")
        try:
            answer = post_bytes(url, data, deadline=self.deadline, handlers=self.retries, log=self.log)
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
        """Post through the incoming webhook (no file), with a WebhookClient whose timeout is the time left."""
        url = (self.settings.slack_webhook_url or "").strip()
        if not url.lower().startswith(("https://", "http://")):
            return self.failed("SLACK_WEBHOOK_URL is not an http(s) URL")
        where = urlsplit(url).hostname or "the webhook host"
        try:
            hook = WebhookClient(
                url,
                timeout=self.time_left("webhook", where),  # type: ignore[arg-type] # urllib takes a float
                retry_handlers=self.retries,
                logger=self.log,
            )
            answer = hook.send(text=text, blocks=blocks, unfurl_links=False, unfurl_media=False)
        except _Failure as failure:
            return self.failed(failure.detail)
        except NO_ANSWER_ERRORS as exc:
            timeout_s = self.settings.slack_timeout_s
            return self.failed(guidance.transport_guidance("webhook", where, reason_of(exc), timeout_s))
        if answer.status_code == 200:
            return NotifyOutcome(NotifyStatus.SENT)
        return self.failed(
            guidance.webhook_guidance(answer.status_code, str(answer.body or "").strip()[:200])
        )

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
            page = self.api(
                "conversations.list",
                lambda c, after=cursor: c.conversations_list(
                    types="public_channel,private_channel",
                    exclude_archived=True,
                    limit=200,
                    cursor=after or None,
                ),
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
